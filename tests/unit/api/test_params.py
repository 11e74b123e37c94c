"""The site parameter and the site's keys: what keeps sites apart and a cluster's slots right."""

from __future__ import annotations

import pytest

from reid_stream.api.params import ParamError, site_param
from reid_stream.store.keys import Keys


def test_site_param_defaults_and_refuses_what_cannot_be_a_hash_tag():
    assert site_param({}) == "default" and site_param({"site_id": ""}) == "default"
    assert site_param({"site_id": "home-17.b_2"}) == "home-17.b_2"
    for bad in ("a{b}", "a}b", "-lead", "a b", "x" * 65, "a/b", "ä"):
        with pytest.raises(ParamError) as err:
            site_param({"site_id": bad})
        assert err.value.param == "site_id"


def test_every_key_of_a_site_has_its_hash_tag_and_sites_never_share_a_key():
    a, b = Keys.of("reid", "home-a"), Keys.of("reid", "home-b")
    names = [a.version("m", "person"), a.marker("d1"), a.entity("e{1}"), a.refs("e"), a.outbox("person"),
             a.alias("x"), a.vec_prefix("m", "person") + "2026-12-02"]
    # Redis hashes the text between the first "{" and the next "}": ids that hold braces come after it.
    assert all(n.startswith("reid:{home-a}:") for n in names)
    assert a.marker("d1") != b.marker("d1") and a.entity("e") != b.entity("e")
    assert Keys.of("reid").prefix == "reid:{default}"

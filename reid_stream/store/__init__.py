"""Redis: the store and its Lua scripts, key names, erasure, the operator's corrections and the watch list.

The only package that talks to Redis.
"""

-- Stores a batch of detections (embedding, appearance, marker) atomically and idempotently, in one call.
-- A compare-and-set on the per-(model, type) version makes assignment safe even if two writers
-- ever overlap (e.g. during a rebalance), or an operator's correction lands first: detection i expects
-- version expected + i, and once one is not stored (a duplicate, or another writer moved the version) the
-- rest answer 'conflict' and are re-matched. Explicitly: a foreign write that moved the version by one would
-- otherwise make detection 1 match after detection 0 did not, and store it on a state it never saw.
-- One call per batch, with what the batch shares passed once, and the detections packed into two
-- arguments: per-detection calls, then per-field arguments, were most of this single-writer stage's cost
-- (the client encodes and frames every argument, and parses every nested reply).
--
-- KEYS: 1 version, 2 embedding index (zset), 3 entities of the type (zset), 4 aliases of the (model, type)
-- ARGV: 1 expected version, 2 ttl seconds, 3 cap, 4 stored_at (epoch s), 5 entity type, 6 model id,
--       7 key prefix, 8 number of detections, 9 bytes per vector,
--       10 the vectors, concatenated in detection order,
--       11 text fields, each ended by a newline (none holds a control character: ids are checked for it,
--          JSON escapes it), per detection:
--       detection id, day, metadata json, marker json, camera id, detection time (epoch s),
--       detection time (iso), appearance json, entity id, n, the n other entities its event names
--       (erasure of one of them rewrites this detection's marker), its watch list alert json ('' for none),
--       and the alert's rate-limit field (watch id and camera id joined by \x1f)
--       12 alert cooldown (seconds of detection time per watch entry and camera; 0: none)
-- Reply: per detection one string, its lines 'ok', version, alert ('raised', 'limited' or ''), evicted ids...
--        | 'dup', marker | 'conflict', version.
-- Every other key is named here from the prefix exactly as store.Keys names it.
local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local etype, model, P = ARGV[5], ARGV[6], ARGV[7]
local vec_prefix = P .. ':entity_embeddings:' .. model .. ':' .. etype .. ':'
local meta_prefix = P .. ':entity_meta:' .. model .. ':' .. etype .. ':'
local expected = tonumber(ARGV[1])

-- While any entity of the type is retained (named or given a trust: see corrections.py, which lists them in
-- the type's names hash), TTLs of keys shared with it only ever grow: its rows and list entries must not be cut
-- back to the embedding TTL by a stranger's write. Otherwise (most of the time) one EXPIRE, as ever.
local any_kept = redis.call('EXISTS', P .. ':named:' .. etype) == 1
local function extend(key, secs)
  if not any_kept or redis.call('TTL', key) < secs then
    redis.call('EXPIRE', key, secs)
  end
end

local function drop(member, evicted)
  local bar = string.find(member, '|', 1, true)
  local day = string.sub(member, 1, bar - 1)
  local det = string.sub(member, bar + 1)
  redis.call('HDEL', vec_prefix .. day, det)
  redis.call('HDEL', meta_prefix .. day, det)
  evicted[#evicted + 1] = det
end

local F = {}
do
  local text, pos = ARGV[11], 1
  while true do
    local e = string.find(text, '\n', pos, true)
    if not e then break end
    F[#F + 1] = string.sub(text, pos, e - 1)
    pos = e + 1
  end
end
local stride, vectors = tonumber(ARGV[9]), ARGV[10]
local cooldown = tonumber(ARGV[12])
local alerts, alert_last = P .. ':alerts:' .. etype, P .. ':alertlast:' .. etype

local stopped = false  -- a detection was not stored: none after it is
local function commit(n, a)
  local det, day, cam, eid = F[a], F[a + 1], F[a + 4], F[a + 8]
  local version = tonumber(redis.call('GET', KEYS[1]) or '0')
  if stopped then
    return 'conflict\n' .. tostring(version)
  end
  local marker_key = P .. ':det:' .. det
  local marker = redis.call('GET', marker_key)
  if marker then
    stopped = true
    return 'dup\n' .. marker
  end
  if version ~= expected + n then
    stopped = true
    return 'conflict\n' .. tostring(version)
  end

  -- A retained entity (named or given a trust, see corrections.py) keeps its rows in the 'kept' hashes,
  -- indexed at (retained until - ttl) so that the age expiry below drops them when the retention ends and the
  -- cap pops them after every ordinary row; its retention runs from this appearance.
  local ent = P .. ':ent:' .. eid
  local etl, score = ttl, now
  local retention = any_kept and tonumber(redis.call('HGET', ent, 'retention') or '0') or 0
  if retention > ttl then
    day, etl, score = 'kept', retention, now + retention - ttl
    redis.call('HSET', ent, 'keep_until', now + retention)
    extend(P .. ':named:' .. etype, etl)
  end
  local vec_key, meta_key = vec_prefix .. day, meta_prefix .. day
  redis.call('HSET', vec_key, det, string.sub(vectors, n * stride + 1, (n + 1) * stride))
  extend(vec_key, etl)
  redis.call('HSET', meta_key, det, F[a + 2])
  extend(meta_key, etl)
  redis.call('ZADD', KEYS[2], score, day .. '|' .. det)

  local evicted = {}
  -- Age first, then the cap: the oldest go first.
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. tostring(now - ttl))
  for _, member in ipairs(expired) do
    drop(member, evicted)
    redis.call('ZREM', KEYS[2], member)
  end
  local excess = redis.call('ZCARD', KEYS[2]) - cap
  if excess > 0 then
    local popped = redis.call('ZPOPMIN', KEYS[2], excess)
    for i = 1, #popped, 2 do
      drop(popped[i], evicted)
    end
  end
  extend(KEYS[2], etl)

  -- The entity: first/last seen are the min/max of detection times, whatever their arrival order.
  local ts = tonumber(F[a + 5])
  local first = tonumber(redis.call('HGET', ent, 'first_ts') or 'inf')
  if ts < first then
    redis.call('HSET', ent, 'first_ts', F[a + 5], 'first_seen', F[a + 6], 'first_det', det, 'first_cam', cam)
  end
  local last = tonumber(redis.call('HGET', ent, 'last_ts') or '-inf')
  if ts > last then
    redis.call('HSET', ent, 'last_ts', F[a + 5], 'last_seen', F[a + 6], 'last_det', det, 'last_cam', cam)
  end
  redis.call('HSETNX', ent, 'entity_type', etype)
  redis.call('HSETNX', ent, 'model', model)
  redis.call('SADD', ent .. ':cams', cam)
  redis.call('HSET', ent .. ':apps', det, F[a + 7])
  redis.call('ZADD', ent .. ':order', ts, det)
  for _, key in ipairs({ent, ent .. ':cams', ent .. ':apps', ent .. ':order'}) do
    redis.call('EXPIRE', key, etl)
  end
  local by_camera = P .. ':cam:' .. etype .. ':' .. cam
  redis.call('ZADD', by_camera, 'GT', ts, eid)
  redis.call('ZADD', KEYS[3], 'GT', ts, eid)
  extend(KEYS[3], etl)
  extend(by_camera, etl)

  -- Its merged ids live as long as its appearances (theirs among them): asking for or erasing one of
  -- them must keep finding this entity.
  local merged_ids = redis.call('SMEMBERS', ent .. ':merged')
  if #merged_ids > 0 then
    redis.call('EXPIRE', ent .. ':merged', etl)
    extend(KEYS[4], etl)
    for _, id in ipairs(merged_ids) do
      redis.call('EXPIRE', P .. ':alias:' .. id, etl)
    end
  end

  redis.call('SET', marker_key, F[a + 3], 'EX', etl)
  local n_named = tonumber(F[a + 9])
  for i = a + 10, a + 9 + n_named do
    local refs = P .. ':refs:' .. F[i]
    redis.call('SADD', refs, det)
    redis.call('EXPIRE', refs, ttl)
  end
  -- Its alert goes in the type's outbox with it, so it is published once it is stored, and never again for a
  -- redelivery (a duplicate is answered above). The rate limit counts detection time, so a backlog replayed
  -- later is limited as it was seen.
  local alert, alert_state = F[a + 10 + n_named], ''
  if alert ~= '' then
    local last = tonumber(redis.call('HGET', alert_last, F[a + 11 + n_named]) or 'nil')
    if cooldown > 0 and last and math.abs(ts - last) < cooldown then
      alert_state = 'limited'
    else
      alert_state = 'raised'
      redis.call('HSET', alert_last, F[a + 11 + n_named], F[a + 5])
      redis.call('EXPIRE', alert_last, math.max(ttl, cooldown))
      redis.call('RPUSH', alerts, alert)
      redis.call('EXPIRE', alerts, ttl)
    end
  end
  redis.call('SET', KEYS[1], version + 1, 'EX', ttl)
  evicted[#evicted + 1] = ''
  return 'ok\n' .. tostring(version + 1) .. '\n' .. alert_state .. '\n' .. table.concat(evicted, '\n')
end

local out = {}
local a = 1
for n = 0, tonumber(ARGV[8]) - 1 do
  out[#out + 1] = commit(n, a)
  a = a + 12 + tonumber(F[a + 9])
end
return out

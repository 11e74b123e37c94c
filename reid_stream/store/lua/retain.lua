-- Sets an entity's name, notes, trust and watch label, and moves its retention in or out: a retained entity
-- (named, watched, or with a trust other than unknown) keeps its rows in the 'kept' hashes, indexed at
-- (retained until - ttl) so that the embedding age expiry drops them when the retention ends and the
-- REID_MAX_EMBEDDINGS cap pops them after every ordinary row; its own keys, markers and aliases live as long.
-- Back to unknown, nameless and unwatched, its rows return to their days' hashes for one more embedding TTL.
-- The same compare-and-set on the per-(model, type) version as every write: the rows listed are exactly the
-- entity's, and the single writer reloads (and sees the name) at its next commit.
--
-- (`extend` comes from prelude.lua.)
-- The change is queued as an `annotated` entity update in the type's outbox (when given), in this same script, so
-- that the long-term memory (archive.py, through entity-updates) gets every annotation at least once.
-- KEYS: 1 version, 2 entity (hash), 3 its order (zset), 4 embedding index (zset), 5 names of the type (hash),
--       6 entities of the type (zset), 7 outbox of the type (list)
-- ARGV: 1 expected version, 2 ttl seconds, 3 retention seconds (0: not retained), 4 now (epoch s),
--       5 key prefix, 6 model, 7 entity type, 8 entity id, 9 fields json {name, notes, trust, watch, watch_by, watch_at} (null: removed),
--       10 names entry json ('' when neither named, trusted nor watched), 11 EntityUpdate json ('' for none: a
--       retention refresh), then per row of the entity: detection, day
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
if version ~= tonumber(ARGV[1]) then
  return {'conflict', tostring(version)}
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {'gone', tostring(version)}
end
local ttl, retention, now = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local P, model, etype, eid = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local vec_prefix = P .. ':entity_embeddings:' .. model .. ':' .. etype .. ':'
local meta_prefix = P .. ':entity_meta:' .. model .. ':' .. etype .. ':'
local fields = cjson.decode(ARGV[9])
for _, f in ipairs({'name', 'notes', 'trust', 'watch', 'watch_by', 'watch_at'}) do
  local v = fields[f]
  if v == nil or v == cjson.null then
    redis.call('HDEL', KEYS[2], f)
  else
    redis.call('HSET', KEYS[2], f, v)
  end
end

local retained = retention > ttl
local etl, score = ttl, now
if retained then
  etl, score = retention, now + retention - ttl
  redis.call('HSET', KEYS[2], 'retention', retention, 'keep_until', now + retention)
else
  redis.call('HDEL', KEYS[2], 'retention', 'keep_until')
end

-- Its rows: into the kept hashes (or back to their days'), re-indexed at the score of the new retention.
local function move(det, from, into)
  for _, prefix in ipairs({vec_prefix, meta_prefix}) do
    local v = redis.call('HGET', prefix .. from, det)
    if v then
      redis.call('HDEL', prefix .. from, det)
      redis.call('HSET', prefix .. into, det, v)
      extend(prefix .. into, etl)
    end
  end
  if redis.call('ZREM', KEYS[4], from .. '|' .. det) == 1 then
    redis.call('ZADD', KEYS[4], score, into .. '|' .. det)
  end
end
for i = 12, #ARGV, 2 do
  local det, day = ARGV[i], ARGV[i + 1]
  if retained then
    move(det, day, 'kept')
    if redis.call('ZSCORE', KEYS[4], 'kept|' .. det) then
      redis.call('ZADD', KEYS[4], score, 'kept|' .. det)  -- already kept: its retention starts again
    end
  else
    move(det, 'kept', day)
  end
  local marker = P .. ':det:' .. det
  if redis.call('EXISTS', marker) == 1 then
    redis.call('EXPIRE', marker, etl)
  end
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  extend(KEYS[4], etl)
end

-- Its own keys, list entries and aliases live as long as it is retained (or one more TTL from now).
local ent = KEYS[2]
for _, key in ipairs({ent, ent .. ':cams', ent .. ':apps', ent .. ':order', ent .. ':merged', P .. ':refs:' .. eid}) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('EXPIRE', key, etl)
  end
end
for _, id in ipairs(redis.call('SMEMBERS', ent .. ':merged')) do
  redis.call('EXPIRE', P .. ':alias:' .. id, etl)
end
if redis.call('EXISTS', P .. ':aliases:' .. model .. ':' .. etype) == 1 then
  extend(P .. ':aliases:' .. model .. ':' .. etype, etl)
end
extend(KEYS[6], etl)
for _, cam in ipairs(redis.call('SMEMBERS', ent .. ':cams')) do
  extend(P .. ':cam:' .. etype .. ':' .. cam, etl)
end

-- The names the single writer reads: this entity's entry, and none for an entity that no longer exists.
if ARGV[10] == '' then
  redis.call('HDEL', KEYS[5], eid)
else
  redis.call('HSET', KEYS[5], eid, ARGV[10])
  extend(KEYS[5], etl)
end
for _, other in ipairs(redis.call('HKEYS', KEYS[5])) do
  if redis.call('EXISTS', P .. ':ent:' .. other) == 0 then
    redis.call('HDEL', KEYS[5], other)
  end
end
if ARGV[11] ~= '' then
  redis.call('RPUSH', KEYS[7], ARGV[11])
  extend(KEYS[7], ttl)
end
redis.call('SET', KEYS[1], version + 1, 'EX', ttl)
return {'ok', tostring(version + 1)}

-- Stores one detection's embedding and appearance atomically and idempotently.
-- A compare-and-set on the per-(model, type) version makes assignment safe even if two writers
-- ever overlap (e.g. during a rebalance): the loser gets 'conflict', reloads and re-matches.
--
-- KEYS: 1 version, 2 embedding index (zset), 3 vectors of the day (hash), 4 metadata of the day (hash),
--       5 detection marker, 6 entity (hash), 7 entity cameras (set), 8 entity appearances (hash),
--       9 entity appearance order (zset), 10 entities of the type (zset), 11 entities of the camera (zset),
--       12 ids merged into the entity (set), 13 aliases of the (model, type) (hash)
-- ARGV: 1 expected version, 2 ttl seconds, 3 cap, 4 detection id, 5 index member "day|detection",
--       6 vector bytes, 7 metadata json, 8 stored_at (epoch s), 9 marker json, 10 entity type,
--       11 camera id, 12 detection time (epoch s), 13 detection time (iso), 14 appearance json,
--       15 key prefix of the day hashes "…:vec:", 16 key prefix "…:meta:", 17 model id, 18 entity id,
--       19 key prefix of the reference sets "…:refs:", 20 key prefix of the alias keys "…:alias:",
--       21… the other entities the event names (matches, candidates, tracklet); erasure of one of them
--       rewrites this detection's marker
local marker = redis.call('GET', KEYS[5])
if marker then
  return {'dup', marker}
end
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
if version ~= tonumber(ARGV[1]) then
  return {'conflict', tostring(version)}
end
local ttl = tonumber(ARGV[2])
local now = tonumber(ARGV[8])

redis.call('HSET', KEYS[3], ARGV[4], ARGV[6])
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('HSET', KEYS[4], ARGV[4], ARGV[7])
redis.call('EXPIRE', KEYS[4], ttl)
redis.call('ZADD', KEYS[2], now, ARGV[5])

local evicted = {}
local function drop(member)
  local bar = string.find(member, '|', 1, true)
  local day = string.sub(member, 1, bar - 1)
  local det = string.sub(member, bar + 1)
  redis.call('HDEL', ARGV[15] .. day, det)
  redis.call('HDEL', ARGV[16] .. day, det)
  evicted[#evicted + 1] = det
end
-- Age first, then the cap: the oldest go first.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. tostring(now - ttl))
for _, member in ipairs(expired) do
  drop(member)
  redis.call('ZREM', KEYS[2], member)
end
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if excess > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], excess)
  for i = 1, #popped, 2 do
    drop(popped[i])
  end
end
redis.call('EXPIRE', KEYS[2], ttl)

-- The entity: first/last seen are the min/max of detection times, whatever their arrival order.
local ts = tonumber(ARGV[12])
local first = tonumber(redis.call('HGET', KEYS[6], 'first_ts') or 'inf')
if ts < first then
  redis.call('HSET', KEYS[6], 'first_ts', ARGV[12], 'first_seen', ARGV[13], 'first_det', ARGV[4], 'first_cam', ARGV[11])
end
local last = tonumber(redis.call('HGET', KEYS[6], 'last_ts') or '-inf')
if ts > last then
  redis.call('HSET', KEYS[6], 'last_ts', ARGV[12], 'last_seen', ARGV[13], 'last_det', ARGV[4], 'last_cam', ARGV[11])
end
redis.call('HSETNX', KEYS[6], 'entity_type', ARGV[10])
redis.call('HSETNX', KEYS[6], 'model', ARGV[17])
redis.call('SADD', KEYS[7], ARGV[11])
redis.call('HSET', KEYS[8], ARGV[4], ARGV[14])
redis.call('ZADD', KEYS[9], ts, ARGV[4])
for i = 6, 9 do
  redis.call('EXPIRE', KEYS[i], ttl)
end
redis.call('ZADD', KEYS[11], 'GT', ts, ARGV[18])
redis.call('ZADD', KEYS[10], 'GT', ts, ARGV[18])
redis.call('EXPIRE', KEYS[10], ttl)
redis.call('EXPIRE', KEYS[11], ttl)

-- Its merged ids live as long as its appearances (theirs among them): asking for or erasing one of
-- them must keep finding this entity.
local merged_ids = redis.call('SMEMBERS', KEYS[12])
if #merged_ids > 0 then
  redis.call('EXPIRE', KEYS[12], ttl)
  redis.call('EXPIRE', KEYS[13], ttl)
  for _, id in ipairs(merged_ids) do
    redis.call('EXPIRE', ARGV[20] .. id, ttl)
  end
end

redis.call('SET', KEYS[5], ARGV[9], 'EX', ttl)
for i = 21, #ARGV do
  local refs = ARGV[19] .. ARGV[i]
  redis.call('SADD', refs, ARGV[4])
  redis.call('EXPIRE', refs, ttl)
end
redis.call('SET', KEYS[1], version + 1, 'EX', ttl)
-- Nested, not unpacked: Lua cannot unpack more than a few thousand values at once.
return {'ok', tostring(version + 1), evicted}

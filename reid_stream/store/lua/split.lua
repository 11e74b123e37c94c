-- Moves some of an entity's detections into a new entity, atomically: their appearances, order and embedding
-- rows (relabelled, so the single writer's reload puts them, and their tracklet, in the new entity); both
-- entities' first/last seen, cameras and list entries are recomputed; the pair is recorded as cannot-link (no
-- automatic or HTTP merge may join them again) and the update is queued in the type's outbox.
-- The same compare-and-set on the per-(model, type) version as every write.
--
-- (`extend` comes from prelude.lua.)
-- Each moved detection's stored match event (its marker) now names the new entity, and the entities it names
-- besides (its candidates and matches: the source among them) list it in their reference sets, so that erasing
-- the source scrubs it there too (erasure.py): the caller rewrote the markers as they were read under this same
-- version.
-- KEYS: 1 version, 2 embedding index (zset), 3 entities of the type (zset), 4 cannot-link pairs (zset),
--       5 outbox of the type (list)
-- ARGV: 1 expected version, 2 ttl seconds, 3 now (epoch s), 4 key prefix, 5 model, 6 entity type,
--       7 source entity, 8 new entity, 9 EntityUpdate json, 10 the pair's member in KEYS[4],
--       then per detection moved: detection, day, its rewritten marker json ('' when it has none), the entities
--       its event names other than the new one, joined by \x1f ('' for none)
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
if version ~= tonumber(ARGV[1]) then
  return {'conflict', tostring(version)}
end
local ttl, now, P, model, etype = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
local src, new = P .. ':ent:' .. ARGV[7], P .. ':ent:' .. ARGV[8]
if redis.call('EXISTS', src) == 0 then
  return {'gone', tostring(version)}
end
if redis.call('EXISTS', new) == 1 or redis.call('EXISTS', P .. ':alias:' .. ARGV[8]) == 1 then
  return {'taken', tostring(version)}
end
local moving = 0
for i = 11, #ARGV, 4 do
  if redis.call('HEXISTS', src .. ':apps', ARGV[i]) == 0 then
    return {'not_member', ARGV[i]}
  end
  moving = moving + 1
end
if moving >= redis.call('HLEN', src .. ':apps') then
  return {'all', tostring(version)}
end
local vec_prefix = P .. ':entity_embeddings:' .. model .. ':' .. etype .. ':'
local meta_prefix = P .. ':entity_meta:' .. model .. ':' .. etype .. ':'
for i = 11, #ARGV, 4 do
  local det, day, marker, named = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if marker ~= '' then
    redis.call('SET', P .. ':det:' .. det, marker, 'KEEPTTL')
  end
  for other in string.gmatch(named, '[^\31]+') do
    redis.call('SADD', P .. ':refs:' .. other, det)
    extend(P .. ':refs:' .. other, ttl)
  end
  redis.call('HSET', new .. ':apps', det, redis.call('HGET', src .. ':apps', det))
  redis.call('HDEL', src .. ':apps', det)
  redis.call('ZADD', new .. ':order', redis.call('ZSCORE', src .. ':order', det), det)
  redis.call('ZREM', src .. ':order', det)
  -- Its embedding row (if not yet expired or evicted) names the new entity. The new entity is not retained:
  -- a row the source kept returns to its day, for one more embedding TTL from now, as does its marker.
  local meta = redis.call('HGET', meta_prefix .. day, det)
  local from = day
  if not meta then
    meta, from = redis.call('HGET', meta_prefix .. 'kept', det), 'kept'
  end
  if meta then
    local m = cjson.decode(meta)
    m['e'] = ARGV[8]
    redis.call('HSET', meta_prefix .. from, det, cjson.encode(m))
    if from == 'kept' then
      for _, prefix in ipairs({vec_prefix, meta_prefix}) do
        redis.call('HSET', prefix .. day, det, redis.call('HGET', prefix .. 'kept', det))
        redis.call('HDEL', prefix .. 'kept', det)
        extend(prefix .. day, ttl)
      end
      redis.call('ZREM', KEYS[2], 'kept|' .. det)
      redis.call('ZADD', KEYS[2], now, day .. '|' .. det)
      redis.call('EXPIRE', P .. ':det:' .. det, ttl)
    end
  end
end

-- First/last seen, cameras and list entries of both, from the appearances each now holds.
local function summarise(ent, id, fresh)
  local ts_of = {}
  local order = redis.call('ZRANGE', ent .. ':order', 0, -1, 'WITHSCORES')
  for i = 1, #order, 2 do
    ts_of[order[i]] = tonumber(order[i + 1])
  end
  local apps = redis.call('HGETALL', ent .. ':apps')
  local first, last, by_cam = nil, nil, {}
  for i = 1, #apps, 2 do
    local det, app = apps[i], cjson.decode(apps[i + 1])
    local ts = ts_of[det] or 0
    if not first or ts < first[1] then first = {ts, app['timestamp'], det, app['camera_id']} end
    if not last or ts > last[1] then last = {ts, app['timestamp'], det, app['camera_id']} end
    if not by_cam[app['camera_id']] or ts > by_cam[app['camera_id']] then by_cam[app['camera_id']] = ts end
  end
  redis.call('HSET', ent, 'first_ts', first[1], 'first_seen', first[2], 'first_det', first[3], 'first_cam', first[4],
             'last_ts', last[1], 'last_seen', last[2], 'last_det', last[3], 'last_cam', last[4])
  local life = fresh and ttl or redis.call('TTL', src)
  for _, cam in ipairs(redis.call('SMEMBERS', ent .. ':cams')) do
    if not by_cam[cam] then
      redis.call('ZREM', P .. ':cam:' .. etype .. ':' .. cam, id)
    end
  end
  redis.call('DEL', ent .. ':cams')
  for cam, ts in pairs(by_cam) do
    redis.call('SADD', ent .. ':cams', cam)
    redis.call('ZADD', P .. ':cam:' .. etype .. ':' .. cam, ts, id)
    extend(P .. ':cam:' .. etype .. ':' .. cam, life)
  end
  redis.call('ZADD', KEYS[3], last[1], id)
  extend(KEYS[3], life)
  for _, key in ipairs({ent, ent .. ':cams', ent .. ':apps', ent .. ':order'}) do
    redis.call('EXPIRE', key, life)
  end
end
redis.call('HSET', new, 'entity_type', etype, 'model', model)
summarise(src, ARGV[7], false)
summarise(new, ARGV[8], true)

-- Cannot-link for as long as the longer-lived of the two is kept.
local until_ = math.max(now + ttl, tonumber(redis.call('HGET', src, 'keep_until') or '0'))
redis.call('ZADD', KEYS[4], until_, ARGV[10])
extend(KEYS[4], math.ceil(until_ - now))
redis.call('RPUSH', KEYS[5], ARGV[9])
extend(KEYS[5], ttl)
redis.call('SET', KEYS[1], version + 1, 'EX', ttl)
return {'ok', tostring(version + 1)}

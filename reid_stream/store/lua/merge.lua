-- Merges one entity into another atomically: the merged entity's appearances, order and cameras move to
-- the survivor, its id becomes an alias of the survivor, and the update is queued in the type's outbox.
-- The same compare-and-set on the per-(model, type) version as store.lua: a writer that matched against
-- an older state gets 'conflict' and decides again.
--
-- (`extend` comes from prelude.lua.)
-- KEYS: 1 version, 2 survivor (hash), 3 survivor cameras (set), 4 survivor appearances (hash),
--       5 survivor appearance order (zset), 6 survivor merged ids (set), 7 merged (hash), 8 merged cameras,
--       9 merged appearances, 10 merged order, 11 merged's merged ids, 12 entities of the type (zset),
--       13 aliases of the (model, type) (hash merged -> survivor), 14 outbox of the type (list),
--       15 refs of the survivor (set), 16 refs of the merged (set), 17 cannot-link pairs of the (model, type)
--       (zset pair -> until), 18 names of the type (hash entity -> {name, trust}), 19 pinned tracklets of
--       the (model, type) (zset track key -> until)
-- ARGV: 1 expected version, 2 ttl seconds, 3 survivor id, 4 merged id, 5 EntityUpdate json,
--       6 key prefix of the camera zsets "…:cam:{type}:", 7 key prefix of the alias keys "…:alias:",
--       8 the pair's member in KEYS[17], then the tracklet keys an operator's merge pins (none for the
--       assign stage's own merges)
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
if version ~= tonumber(ARGV[1]) then
  return {'conflict', tostring(version)}
end
if redis.call('EXISTS', KEYS[2]) == 0 or redis.call('EXISTS', KEYS[7]) == 0 then
  return {'gone', tostring(version)}
end
local now = tonumber(redis.call('TIME')[1])
-- An operator split these two apart: neither a stale automatic decision nor an HTTP merge may undo it.
if tonumber(redis.call('ZSCORE', KEYS[17], ARGV[8]) or '0') > now then
  return {'apart', tostring(version)}
end
local ttl = tonumber(ARGV[2])
local survivor, merged = ARGV[3], ARGV[4]

-- Name, notes, trust and watch: the survivor keeps its own and takes the merged one's where it has none; the
-- longer retention wins (see corrections.py).
for _, f in ipairs({'name', 'notes', 'trust', 'watch', 'watch_by', 'watch_at'}) do
  local v = redis.call('HGET', KEYS[7], f)
  if v and redis.call('HEXISTS', KEYS[2], f) == 0 then
    redis.call('HSET', KEYS[2], f, v)
  end
end
for _, f in ipairs({'retention', 'keep_until'}) do
  local theirs = tonumber(redis.call('HGET', KEYS[7], f) or '0')
  if theirs > tonumber(redis.call('HGET', KEYS[2], f) or '0') then
    redis.call('HSET', KEYS[2], f, theirs)
  end
end
-- The survivor's entry in the names hash (what the assign stage reads) is made again from what it now holds.
redis.call('HDEL', KEYS[18], merged)
local entry, any = {}, false
for _, f in ipairs({'name', 'trust', 'watch'}) do
  local v = redis.call('HGET', KEYS[2], f)
  if v then
    entry[f], any = v, true
  end
end
if any then
  redis.call('HSET', KEYS[18], survivor, cjson.encode(entry))
end
local etl = math.max(ttl, math.ceil(tonumber(redis.call('HGET', KEYS[2], 'keep_until') or '0') - now))
-- Appearances and their order, one by one: Lua cannot unpack more than a few thousand values at once.
local apps = redis.call('HGETALL', KEYS[9])
for i = 1, #apps, 2 do
  redis.call('HSET', KEYS[4], apps[i], apps[i + 1])
end
local order = redis.call('ZRANGE', KEYS[10], 0, -1, 'WITHSCORES')
for i = 1, #order, 2 do
  redis.call('ZADD', KEYS[5], order[i + 1], order[i])
end

-- First/last seen stay the min/max of detection times, with the detection and camera that set them.
local function ts_of(key, prefix)
  local raw = redis.call('HGET', key, prefix .. '_ts')  -- false when missing
  return raw and tonumber(raw)
end
local function take(prefix, better)
  local mine, theirs = ts_of(KEYS[2], prefix), ts_of(KEYS[7], prefix)
  if theirs and (not mine or better(theirs, mine)) then
    local f = redis.call('HMGET', KEYS[7], prefix .. '_ts', prefix .. '_seen', prefix .. '_det', prefix .. '_cam')
    redis.call('HSET', KEYS[2], prefix .. '_ts', f[1], prefix .. '_seen', f[2])
    -- Entities stored before *_det/*_cam existed lack them; their founding detection is their id.
    redis.call('HSET', KEYS[2], prefix .. '_det', f[3] or merged)
    if f[4] then
      redis.call('HSET', KEYS[2], prefix .. '_cam', f[4])
    end
  end
end
take('first', function(a, b) return a < b end)
take('last', function(a, b) return a > b end)

-- The lists: the merged id goes; the survivor keeps, per camera, the later of the two last-seen times.
local cams = redis.call('SMEMBERS', KEYS[8])
for _, cam in ipairs(cams) do
  local key = ARGV[6] .. cam
  local score = redis.call('ZSCORE', key, merged)
  redis.call('ZREM', key, merged)
  if score then
    redis.call('ZADD', key, 'GT', score, survivor)
  end
  extend(key, etl)
  redis.call('SADD', KEYS[3], cam)
end
local last = redis.call('ZSCORE', KEYS[12], merged)
redis.call('ZREM', KEYS[12], merged)
if last then
  redis.call('ZADD', KEYS[12], 'GT', last, survivor)
end

-- Aliases: the merged id and every id merged into it before now name the survivor (chains flatten).
local former = redis.call('SMEMBERS', KEYS[11])
former[#former + 1] = merged
for _, id in ipairs(former) do
  redis.call('SADD', KEYS[6], id)
  redis.call('SET', ARGV[7] .. id, survivor, 'EX', etl)
  redis.call('HSET', KEYS[13], id, survivor)
end
-- A live entity is nobody's alias: this keeps a stale alias from ever forming a cycle.
redis.call('DEL', ARGV[7] .. survivor)
redis.call('HDEL', KEYS[13], survivor)

-- Who referenced the merged entity now references the survivor (erasure follows these).
redis.call('SUNIONSTORE', KEYS[15], KEYS[15], KEYS[16])

redis.call('DEL', KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[16])
redis.call('RPUSH', KEYS[14], ARGV[5])
for _, i in ipairs({2, 3, 4, 5, 6, 15}) do
  redis.call('EXPIRE', KEYS[i], etl)
end
for _, i in ipairs({12, 13, 14}) do
  extend(KEYS[i], etl)
end
if redis.call('HLEN', KEYS[18]) > 0 then
  extend(KEYS[18], etl)
end
-- An operator said these tracklets are one person: none of them is decided again for contradicting the others.
for i = 9, #ARGV do
  redis.call('ZADD', KEYS[19], now + etl, ARGV[i])
end
if #ARGV >= 9 then
  extend(KEYS[19], etl)
end
redis.call('SET', KEYS[1], version + 1, 'EX', ttl)
return {'ok', tostring(version + 1)}

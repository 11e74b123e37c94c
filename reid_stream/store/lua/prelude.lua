-- Prepended to the correction scripts (merge.lua, retain.lua, split.lua) when they are loaded (store.py,
-- lua_script).

-- A key lives at least `secs` more seconds, never less than it already would: a retained entity's keys, shared
-- with strangers, must not be cut back to the embedding TTL (EXPIRE on a missing key does nothing).
local function extend(key, secs)
  if redis.call('TTL', key) < secs then
    redis.call('EXPIRE', key, secs)
  end
end


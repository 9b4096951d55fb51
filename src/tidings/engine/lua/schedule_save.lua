-- schedule_save: create, replace or change a recurring schedule atomically.
-- KEYS[1]: due zset; KEYS[2]: ids set; KEYS[3]: the schedule's hash.
-- ARGV: id, mode ('create' | 'replace' | 'update'), expected version or '' (any),
--       definition JSON, paused ('0' | '1'), next fire ms or '' (none), checked-until ms or ''
--       (raised to it, never lowered), now ms.
-- Bumping the version tells a ticker that holds a claim that the definition changed under
-- it (see schedule_commit.lua).
-- Returns the new version; 0 if 'create' found the id taken; -1 if 'update' found no
-- schedule; -2 if the version is not the expected one (changed concurrently: read again).
local DUE, IDS, H = KEYS[1], KEYS[2], KEYS[3]
local id, mode = ARGV[1], ARGV[2]
local exists = redis.call('EXISTS', H) == 1
if mode == 'create' and exists then return 0 end
if mode == 'update' and not exists then return -1 end
if ARGV[3] ~= '' and redis.call('HGET', H, 'version') ~= ARGV[3] then return -2 end
if not exists then
  redis.call('HSET', H, 'id', id, 'created_at', ARGV[8], 'fired_count', 0)
  redis.call('SADD', IDS, id)
end
local version = redis.call('HINCRBY', H, 'version', 1)
redis.call('HSET', H, 'def', ARGV[4], 'paused', ARGV[5], 'updated_at', ARGV[8])
if ARGV[7] ~= '' then
  local current = tonumber(redis.call('HGET', H, 'checked_until') or '')
  if current == nil or tonumber(ARGV[7]) > current then
    redis.call('HSET', H, 'checked_until', ARGV[7])
  end
end
if ARGV[5] == '1' or ARGV[6] == '' then
  redis.call('ZREM', DUE, id)
  redis.call('HSET', H, 'next_fire', '')
else
  redis.call('ZADD', DUE, ARGV[6], id)
  redis.call('HSET', H, 'next_fire', ARGV[6])
end
return version

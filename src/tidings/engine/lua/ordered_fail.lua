-- ordered_fail: settle a head whose handler failed or snoozed; later messages of its key
-- keep waiting unless it is dead-lettered.
-- KEYS[1..8]: the partition keys (see includes/ordered.lua); KEYS[9]: the key's list.
-- ARGV: worker, epoch, key, msg id, action, new item (attempts counted), delay ms,
--       blocked info JSON (or ''), reason, error JSON.
-- action: 'retry' (wait delay, then run again; the key shows as blocked meanwhile),
--         'snooze' (wait delay; no attempt spent), 'block' (hold the key for an
--         operator), 'dead_letter' (to the dead-letter stream; the key goes on).
-- Returns 1, or 0 if refused (the partition or the head moved on).
-- @flags allow-oom
-- @include ordered
local worker, epoch, key, id, action = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local list = KEYS[9]
if not owns(worker, epoch) or redis.call('HGET', ACTIVE, key) ~= epoch .. '|' .. id then
  return 0
end
local now = now_ms()
local head = redis.call('LINDEX', list, 0)
if head and id_of(head) == id then redis.call('LSET', list, 0, ARGV[6]) end
if action == 'dead_letter' then
  dead_letter_head(key, list, ARGV[9], ARGV[10], now)
  return 1
end
redis.call('HDEL', ACTIVE, key)
redis.call('HDEL', DELIVERIES, id)
if action ~= 'block' then redis.call('ZADD', WAITING, now + tonumber(ARGV[7]), key) end
if ARGV[8] ~= '' then redis.call('HSET', BLOCKED, key, ARGV[8]) end
redis.call('HINCRBY', STATS, action, 1)
return 1

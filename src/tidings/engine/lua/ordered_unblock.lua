-- ordered_unblock: an operator resolves a blocked key: run its head again now with fresh
-- attempts ('retry'), or dead-letter the head so the key goes on ('skip').
-- KEYS[1..8]: the partition keys (see includes/ordered.lua); KEYS[9]: the key's list.
-- ARGV: key, action, expected head msg id, new item (for retry), reason (for skip).
-- Returns 1 done, 0 the key is not blocked or its head changed, -1 it is running now.
-- @flags allow-oom
-- @include ordered
local key, action, expected = ARGV[1], ARGV[2], ARGV[3]
local list = KEYS[9]
if redis.call('HEXISTS', ACTIVE, key) == 1 then return -1 end
local waiting = redis.call('ZSCORE', WAITING, key)
if redis.call('HEXISTS', BLOCKED, key) == 0 and not waiting then return 0 end
local head = redis.call('LINDEX', list, 0)
if not head or id_of(head) ~= expected then return 0 end
if action == 'skip' then
  dead_letter_head(key, list, ARGV[5], '', now_ms())
  return 1
end
redis.call('LSET', list, 0, ARGV[4])
redis.call('HDEL', BLOCKED, key)
redis.call('HDEL', DELIVERIES, expected)
redis.call('ZREM', WAITING, key)
redis.call('RPUSH', READY, key)
return 1

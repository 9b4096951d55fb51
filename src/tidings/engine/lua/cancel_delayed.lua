-- cancel_delayed: remove a message that waits in the delayed set.
-- KEYS[1..12]: the queue keys (see includes/common.lua). ARGV[1]: msg id.
-- Returns 1 if it was waiting and is now gone, 0 if it was not in the delayed set.
-- @flags allow-oom
-- @include common
local msg_id = ARGV[1]
if redis.call('ZREM', DELAYED, msg_id) == 0 then return 0 end
redis.call('HDEL', BODIES, msg_id)
redis.call('HDEL', INDEX, msg_id)
redis.call('HINCRBY', STATS, 'cancelled', 1)
return 1

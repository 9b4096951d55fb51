-- key_resume: un-pause a key of a queue and make its parked messages due now.
-- KEYS[1..12]: the queue keys (see includes/common.lua); KEYS[13]: paused keys set,
-- KEYS[14]: parked zset of the key (msg id -> times parked); all under the queue's tag.
-- ARGV[1]: the key.
-- Returns how many parked messages were made due. A parked message whose snooze has not
-- been settled yet (its handler is still returning) is not in the delayed set yet; it
-- comes back when its snooze runs out instead.
-- @flags allow-oom
-- @include common
local was = redis.call('SREM', KEYS[13], ARGV[1])
local now = now_ms()
local moved = 0
for _, msg_id in ipairs(redis.call('ZRANGE', KEYS[14], 0, -1)) do
  if redis.call('ZSCORE', DELAYED, msg_id) then
    redis.call('ZADD', DELAYED, 'XX', now, msg_id)
    moved = moved + 1
  end
end
redis.call('DEL', KEYS[14])
if moved > 0 or was > 0 then redis.call('XADD', WAKE, 'MAXLEN', '1', '*', 'w', '1') end
return moved

-- erase_queued: delete messages from their lanes for good (GDPR erasure, tidings.ledger).
-- KEYS[1..12]: the queue keys (see includes/common.lua).
-- ARGV[1]: the consumer group; then per message 3 values: lane (0-2), entry id, msg id.
-- Returns the number of entries deleted. An entry held by a consumer is deleted too: the
-- lease is acknowledged with it, so it is never delivered again.
-- @flags allow-oom
-- @include common
local erased = 0
for i = 2, #ARGV, 3 do
  local lane, sid, msg_id = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2]
  if redis.call('XDEL', LANES[lane + 1], sid) > 0 then
    erased = erased + 1
  end
  remove_entry(ARGV[1], lane, sid)
  if redis.call('HGET', INDEX, msg_id) == lane .. ':' .. sid then
    redis.call('HDEL', INDEX, msg_id)
  end
end
if erased > 0 then redis.call('HINCRBY', STATS, 'erased', erased) end
return erased

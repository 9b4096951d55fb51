-- ack: settle processed messages, only where the caller still holds the lease.
-- KEYS[1..12]: the queue keys (see includes/common.lua).
-- ARGV: group, then per message: lane, entry id, token, msg id (at most 2000 messages:
--   the batch is unpacked into single XACK / XDEL / HDEL calls, one per lane or hash).
-- Returns the 1-based indexes of refused acks (lease lost: reclaimed or already settled).
-- @flags allow-oom
-- @include common
local group = ARGV[1]
local counters = {}
for i = 2, #ARGV, 4 do counters[#counters + 1] = ARGV[i] .. ARGV[i + 1] end
local tokens = redis.call('HMGET', DELIVERIES, unpack(counters))
local refused, settled, msg_ids = {}, {}, {}
local per_lane = {{}, {}, {}}
local n = 0
for i = 2, #ARGV, 4 do
  n = n + 1
  if tokens[n] == ARGV[i + 2] then
    local ids = per_lane[tonumber(ARGV[i]) + 1]
    ids[#ids + 1] = ARGV[i + 1]
    settled[#settled + 1] = counters[n]
    msg_ids[#msg_ids + 1] = ARGV[i + 3]
  else
    refused[#refused + 1] = n
  end
end
for lane = 1, 3 do
  local ids = per_lane[lane]
  if #ids > 0 then
    redis.call('XACK', LANES[lane], group, unpack(ids))
    redis.call('XDEL', LANES[lane], unpack(ids))
    redis.call('HINCRBY', STATS, 'acked:' .. (lane - 1), #ids)
  end
end
if #settled > 0 then
  redis.call('HDEL', DELIVERIES, unpack(settled))
  redis.call('HDEL', INDEX, unpack(msg_ids))
end
return refused

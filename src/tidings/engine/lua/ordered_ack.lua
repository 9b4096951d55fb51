-- ordered_ack: settle processed heads; each key moves on to its next message.
-- KEYS[1..8]: the partition keys (see includes/ordered.lua); KEYS[9..]: key lists.
-- ARGV: worker, epoch, then per message: KEYS index of its key's list, key, msg id.
-- Returns the 1-based indexes of refused acks (the partition or the head moved on).
-- @flags allow-oom
-- @include ordered
local worker, epoch = ARGV[1], ARGV[2]
local owner = owns(worker, epoch)
local refused, n, acked = {}, 0, 0
for i = 3, #ARGV, 3 do
  n = n + 1
  local list, key, id = KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2]
  if owner and redis.call('HGET', ACTIVE, key) == epoch .. '|' .. id then
    local head = redis.call('LINDEX', list, 0)
    if head and id_of(head) == id then redis.call('LPOP', list) end
    redis.call('HDEL', ACTIVE, key)
    redis.call('HDEL', BLOCKED, key)
    redis.call('HDEL', DELIVERIES, id)
    requeue(key, list)
    acked = acked + 1
  else
    refused[#refused + 1] = n
  end
end
if acked > 0 then redis.call('HINCRBY', STATS, 'acked', acked) end
return refused

-- ordered_take: the owner takes the heads of up to `count` ready keys to run them.
-- KEYS[1..8]: the partition keys (see includes/ordered.lua).
-- ARGV: worker, epoch, count, key list prefix, max deliveries (0: off),
--       on failure ('block' | 'dead_letter').
-- Returns {1, items, ms until the next waiting key is due or -1} where items are
-- {key, item, deliveries}, or {0} when the caller does not own the partition.
-- @flags allow-oom
-- @include ordered
local worker, epoch, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local prefix, max_deliveries, policy = ARGV[4], tonumber(ARGV[5]), ARGV[6]
if not owns(worker, epoch) then return {0} end
local now = now_ms()
for _, key in ipairs(redis.call('ZRANGEBYSCORE', WAITING, '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', WAITING, key)
  redis.call('RPUSH', READY, key)
end
local out = {}
while #out < count do
  local key = redis.call('LPOP', READY)
  if not key then break end
  local list = prefix .. key
  local item = redis.call('LINDEX', list, 0)
  if item and redis.call('HEXISTS', ACTIVE, key) == 0 then
    local id = id_of(item)
    local deliveries = redis.call('HINCRBY', DELIVERIES, id, 1)
    if max_deliveries > 0 and deliveries > max_deliveries then
      -- Delivered again and again, never settled: it kills its worker (poison).
      local err = 'delivered ' .. (deliveries - 1) .. ' times without being settled'
      redis.call('HINCRBY', STATS, 'poison', 1)
      if policy == 'dead_letter' then
        dead_letter_head(key, list, 'poison', err, now)
      else
        redis.call('HDEL', DELIVERIES, id)
        redis.call('HSET', BLOCKED, key, cjson.encode({state = 'blocked', id = id,
          reason = 'poison', error = err, since = now}))
      end
    else
      redis.call('HSET', ACTIVE, key, epoch .. '|' .. id)
      out[#out + 1] = {key, item, deliveries}
    end
  end
end
local next_due = -1
local head = redis.call('ZRANGE', WAITING, 0, 0, 'WITHSCORES')
if head[2] then next_due = math.max(0, tonumber(head[2]) - now) end
return {1, out, next_due}

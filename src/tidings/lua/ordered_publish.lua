-- ordered_publish: append messages to their keys' lists in one partition.
-- KEYS[1..8]: the partition keys (see includes/ordered.lua); KEYS[9..]: key lists.
-- ARGV: per message, 3 values: KEYS index of its key's list, key, item ("id|envelope").
-- Returns the number of messages added.
-- @include ordered
local n = 0
for i = 1, #ARGV, 3 do
  local list, key = KEYS[tonumber(ARGV[i])], ARGV[i + 1]
  -- A list that was empty belonged to a key that was nowhere: it joins the line now.
  if redis.call('RPUSH', list, ARGV[i + 2]) == 1
      and redis.call('HEXISTS', ACTIVE, key) == 0
      and not redis.call('ZSCORE', WAITING, key)
      and redis.call('HEXISTS', BLOCKED, key) == 0 then
    redis.call('RPUSH', READY, key)
  end
  n = n + 1
end
redis.call('HINCRBY', STATS, 'published', n)
return n

-- ordered_publish: append messages to their keys' lists in one partition.
-- KEYS[1..8]: the partition keys (see includes/ordered.lua); KEYS[9..]: key lists.
-- ARGV: per message, 3 values: KEYS index of its key's list, key, item ("id|envelope").
-- Returns the number of messages added.
-- @include ordered
local n = 0
for i = 1, #ARGV, 3 do
  append(KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
  n = n + 1
end
redis.call('HINCRBY', STATS, 'published', n)
return n

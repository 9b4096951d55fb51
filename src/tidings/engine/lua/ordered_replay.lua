-- ordered_replay: put dead-lettered messages of one partition back at the end of their
-- keys' lines (after the messages of the key published since), or drop them (purge).
-- KEYS[1..8]: the partition keys (see includes/ordered.lua); KEYS[9..]: key lists.
-- ARGV: action ('replay' or 'purge'), then per entry 4 values: dead-letter entry id,
--       KEYS index of its key's list, key, item ("id|envelope", attempts reset); a purge
--       uses only the entry id (the rest may be 0 or empty).
-- An entry already gone (replayed or purged by someone else) is skipped, so a replay
-- never enqueues a message twice. Returns the number of entries handled.
-- @include ordered
local action, n = ARGV[1], 0
for i = 2, #ARGV, 4 do
  if redis.call('XDEL', DLQ, ARGV[i]) == 1 then
    if action == 'replay' then append(KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3]) end
    n = n + 1
  end
end
if n > 0 then redis.call('HINCRBY', STATS, action == 'replay' and 'replayed' or 'purged', n) end
return n

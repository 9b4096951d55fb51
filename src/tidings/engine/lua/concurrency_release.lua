-- concurrency_release: give slots back.
-- KEYS[1]: slots zset (holder token -> lease expiry, server ms).
-- ARGV[1..]: holder tokens.
-- Returns how many of them were still held.
-- @flags allow-oom
local released = 0
-- One ZREM per token: unpack() of a long ARGV would overflow the Lua C stack.
for i = 1, #ARGV do
  released = released + redis.call('ZREM', KEYS[1], ARGV[i])
end
return released

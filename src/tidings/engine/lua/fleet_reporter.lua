-- fleet_reporter: take, renew or give up the lease of the worker that reports fleet metrics.
-- KEYS[1]: the lease (KeySpace.fleet_reporter).
-- ARGV[1]: owner (a consumer name), ARGV[2]: lease ms, ARGV[3]: 1 to give it up, else 0.
-- Returns 1 while ARGV[1] holds the lease, else 0.
-- @flags allow-oom
local key, owner, ttl, release = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local holder = redis.call('GET', key)
if release then
  if holder == owner then redis.call('DEL', key) end
  return 0
end
if holder == owner then
  redis.call('PEXPIRE', key, ttl)
  return 1
end
if not holder then
  redis.call('SET', key, owner, 'PX', ttl)
  return 1
end
return 0

-- ordered_release: give a partition up (handover or shutdown) so another worker can take
-- it at once; heads still in flight become ready again.
-- KEYS[1..8]: the partition keys (see includes/ordered.lua). ARGV: worker, epoch.
-- Returns 1, or 0 if the caller did not own it (any more).
-- @flags allow-oom
-- @include ordered
if not owns(ARGV[1], ARGV[2]) then return 0 end
redis.call('HSET', OWNER, 'w', '', 'x', 0)
requeue_active()
return 1

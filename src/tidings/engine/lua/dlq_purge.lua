-- dlq_purge: delete dead-lettered messages for good.
-- KEYS[1..12]: the queue keys (see includes/common.lua). ARGV: dead-letter entry ids.
-- Returns the number of entries deleted.
-- @flags allow-oom
-- @include common
local purged = 0
for _, sid in ipairs(ARGV) do
  local entry = redis.call('XRANGE', DLQ, sid, sid)
  if entry[1] then
    local f = fields_of(entry[1][2])
    if f['i'] and redis.call('HGET', INDEX, f['i']) == 'x:' .. sid then
      redis.call('HDEL', INDEX, f['i'])
    end
    purged = purged + redis.call('XDEL', DLQ, sid)
  end
end
if purged > 0 then redis.call('HINCRBY', STATS, 'purged', purged) end
return purged

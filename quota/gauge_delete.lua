-- A gauge delete, run after the upstream's 2xx: takes the amount off the
-- gauge, never below zero, and reads the limit for the response's X-Quota-*
-- headers, in the delete's one round trip. Nothing is read before
-- forwarding a delete that requires no flag (reserve.go): a delete can only
-- free units, so it needs no check, and the headers report the usage after
-- it instead of before.
--
-- KEYS[1] entitlement hash tg:{tid}:ent
-- KEYS[2] gauge key
-- ARGV[1] amount to take off (> 0)
-- ARGV[2] limit field l:<feature>
-- ARGV[3] grace: the ceiling is floor(limit * grace + 1e-9), as in reserve.lua
--
-- Reply {code, used, limit, ceiling[, extra]}: code 1 done; 4 done, but
-- the tenant has no entitlement, or one that is no hash (no limit to
-- report); 8 a value Tollgate does not write, as in reserve.lua: extra 2
-- the gauge is no integer or a key of another type (nothing changed), 3
-- the limit is no integer (done; limit and ceiling -1, nothing to report).
-- used is the gauge after the delete; limit and ceiling are -1 when
-- unlimited. Numbers read must be integers within +-2^53, checked as in
-- reserve.lua.
--
-- Every command that can meet a key of another type is a pcall, so such a
-- key is answered as above instead of failing the script: Commit would
-- keep a failed delete for reconcile, which could never deliver it.
local h = redis.pcall('HMGET', KEYS[1], 'plan', ARGV[2])
-- GET's error reply is a table, which tonumber turns into nil.
local used = redis.pcall('GET', KEYS[2])
if used then
  used = tonumber(used)
  if not (used and used % 1 == 0 and used >= -2^53 and used <= 2^53) then
    return {8, 0, 0, 0, 2}
  end
  local take = math.min(used, tonumber(ARGV[1]))
  if take > 0 then
    used = redis.pcall('DECRBY', KEYS[2], take)
    if type(used) ~= 'number' then
      return {8, 0, 0, 0, 2}
    end
  end
else
  used = 0
end
-- An entitlement that is no hash: HMGET's error table has no h[1].
if not h[1] then
  return {4, used, -1, -1}
end
-- A feature missing from the hash was never granted: limit 0.
local limit = tonumber(h[2] or '0')
if not (limit and limit % 1 == 0 and limit >= -2^53 and limit <= 2^53) then
  return {8, used, -1, -1, 3}
end
if limit < 0 then
  return {1, used, -1, -1}
end
return {1, used, limit, math.floor(limit * tonumber(ARGV[3]) + 1e-9)}

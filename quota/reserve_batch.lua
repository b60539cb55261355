-- Many requests' reserves in one script run (appended to reserve.lua): the
-- pipeline folds the reserves that leave in one write into this call
-- (pipeline.go). Each request is decided in order exactly as reserve_one
-- would decide it, so a limit holds the same way; what the batch saves is
-- a command, a reply and a script run per request.
--
-- Requests with identical arguments (the common case: one tenant's calls
-- to one route) come as one run, sent once with their count, and
-- reserve decides the whole run with one read and one write.
--
-- KEYS: every run's keys, in order.
-- ARGV: per run, its key count, its argument count, its request count,
--       then its arguments.
-- Reply, per run of k requests: the length of the first's decision and
-- the decision; when k > 1, then m and step: the next m requests get the
-- first's decision with its current value (field 2) step, 2 step, ...
-- higher; when m < k - 1, then the length and decision of the rest.
--
-- A run fails alone: reserve answers a value it does not expect in Redis
-- as "malformed" itself, and any error it still raises gives every request
-- of its run {8, 0, 0, 0, 0, the error's text, one integer per byte (its
-- first 255)}. A script error would fail the whole batch after earlier
-- runs were counted, and those requests' fail mode would count them again.
local out, n = {}, 0
local function emit(r)
  local len = #r
  out[n + 1] = len
  for i = 1, len do
    out[n + 1 + i] = r[i]
  end
  n = n + 1 + len
end

local k, a = 1, 1
while a <= #ARGV do
  local nk, na, count = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local keys, argv = {unpack(KEYS, k, k + nk - 1)}, {unpack(ARGV, a + 3, a + 2 + na)}
  k, a = k + nk, a + 3 + na
  local ok, r, m, step, rest = pcall(reserve, keys, argv, count)
  if not ok then
    -- Lua's own errors are strings; a command's error raised by
    -- redis.call is a string or an error table, by Redis version.
    local e = type(r) == 'table' and r.err or tostring(r)
    r, m, step, rest = {8, 0, 0, 0, 0, string.byte(e, 1, 255)}, count - 1, 0, nil
  end
  emit(r)
  if count > 1 then
    out[n + 1], out[n + 2] = m, step
    n = n + 2
    if rest then
      emit(rest)
    end
  end
end
return out

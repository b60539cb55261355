-- One request's reserve (appended to reserve.lua): KEYS and ARGV as that
-- file describes, the reply is the decision's.
return (reserve(KEYS, ARGV, 1))

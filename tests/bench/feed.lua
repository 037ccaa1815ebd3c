-- wrk script of `./dev bench layouts`: POSTs the JSON in BODY_FILE to /graphql, each
-- request as the next bearer token of TOKENS_FILE (one per line). Counts good answers
-- (200 without "errors"), 503s (admission refused them) and every other answer apart,
-- and prints one JSON line at the end (tests/bench/wrk.py reads it).
local function slurp(variable)
  local name = assert(os.getenv(variable), variable .. " is not set")
  local file = assert(io.open(name))
  local text = file:read("*a")
  file:close()
  return text
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  body = slurp("BODY_FILE")
  tokens = {}
  for token in slurp("TOKENS_FILE"):gmatch("[^\n]+") do
    tokens[#tokens + 1] = token
  end
  next_token = math.random(#tokens)
  good, overloaded, failed = 0, 0, 0
end

function request()
  next_token = next_token % #tokens + 1
  return wrk.format("POST", "/graphql", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. tokens[next_token],
  }, body)
end

function response(status, headers, answer)
  if status == 200 and not answer:find('"errors"', 1, true) then
    good = good + 1
  elseif status == 503 then
    overloaded = overloaded + 1
  else
    failed = failed + 1
    if failed <= 3 then
      io.stderr:write(status, " ", answer:sub(1, 300), "\n")
    end
  end
end

function done(summary, latency, requests)
  local totals = { good = 0, overloaded = 0, failed = 0 }
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do
      totals[name] = totals[name] + thread:get(name)
    end
  end
  local e = summary.errors
  io.write(string.format(
    '{"good":%d,"overloaded":%d,"failed":%d,"socket_errors":%d,"duration_us":%d,' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d}\n',
    totals.good, totals.overloaded, totals.failed, e.connect + e.read + e.write + e.timeout,
    summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end

-- Shared by every scenario: per-thread error counting and one JSON line of results.
-- Any status outside 2xx counts as an error.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  errors = 0
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    errors = errors + 1
  end
end

function done(summary, latency, requests)
  local failed = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  for _, thread in ipairs(threads) do
    failed = failed + thread:get("errors")
  end
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p95_ms": %.3f, "p99_ms": %.3f, "errors": %d}\n',
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000, failed))
end

-- Lines of a data file the harness wrote, split on spaces.
function load_rows(path)
  local rows = {}
  for line in io.lines(path) do
    local fields = {}
    for field in line:gmatch("%S+") do
      table.insert(fields, field)
    end
    table.insert(rows, fields)
  end
  return rows
end

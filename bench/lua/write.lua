-- Half POST /tasks, half PATCH /tasks/{id} of a task the caller owns; rows: "<token> <task id>".
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
local rows = load_rows(os.getenv("BENCH_DATA") .. "/read.txt")
local statuses = { "new", "in_progress", "completed" }
math.randomseed(os.time())

function request()
  local row = rows[math.random(#rows)]
  local headers = { Authorization = "Bearer " .. row[1], ["Content-Type"] = "application/json" }
  if math.random() < 0.5 then
    local body = '{"title": "Benchmark task", "priority": "high", "due_date": "2031-01-01T09:00:00+00:00"}'
    return wrk.format("POST", "/tasks", headers, body)
  end
  local body = '{"status": "' .. statuses[math.random(#statuses)] .. '"}'
  return wrk.format("PATCH", "/tasks/" .. row[2], headers, body)
end

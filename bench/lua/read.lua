-- GET /tasks/{id} as the task's owner; rows: "<token> <task id>", spread over many users.
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
local rows = load_rows(os.getenv("BENCH_DATA") .. "/read.txt")
math.randomseed(os.time())

function request()
  local row = rows[math.random(#rows)]
  return wrk.format("GET", "/tasks/" .. row[2], { Authorization = "Bearer " .. row[1] })
end

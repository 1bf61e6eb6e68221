-- GET /tasks?limit=20 (or BENCH_QUERY) with one of many users' tokens; rows: "<token>".
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
local rows = load_rows(os.getenv("BENCH_DATA") .. "/" .. (os.getenv("BENCH_TOKENS") or "list.txt"))
local query = os.getenv("BENCH_QUERY") or "limit=20"
math.randomseed(os.time())

function request()
  local row = rows[math.random(#rows)]
  return wrk.format("GET", "/tasks?" .. query, { Authorization = "Bearer " .. row[1] })
end

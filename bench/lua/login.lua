-- POST /login with JSON credentials at the production bcrypt cost; rows: "<email> <password>".
dofile(os.getenv("BENCH_LUA") .. "/common.lua")
local rows = load_rows(os.getenv("BENCH_DATA") .. "/login.txt")
math.randomseed(os.time())

function request()
  local row = rows[math.random(#rows)]
  local body = '{"email": "' .. row[1] .. '", "password": "' .. row[2] .. '"}'
  return wrk.format("POST", "/login", { ["Content-Type"] = "application/json" }, body)
end

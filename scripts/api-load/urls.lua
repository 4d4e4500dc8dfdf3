-- wrk script for scripts/api-load.sh: rotates GET requests over the alert
-- and device endpoints. DEVICES (count) and FAULTED (comma-separated device
-- ids with injected faults, so that their alert queries return rows) come
-- from the environment.
local devices = tonumber(os.getenv("DEVICES") or "1000")
local faulted = {}
for id in string.gmatch(os.getenv("FAULTED") or "", "[^,]+") do
  faulted[#faulted + 1] = id
end
if #faulted == 0 then faulted[1] = "plant-0000" end

local n = 0
local thread_seed = 0

function setup(thread)
  thread_seed = thread_seed + 1
  thread:set("seed", thread_seed)
end

function init(args)
  math.randomseed(seed or 1)
end

local function device_id(i)
  return string.format("plant-%04d", i)
end

request = function()
  n = n + 1
  local k = n % 4
  local path
  if k == 0 then
    path = "/api/v1/alerts?limit=50"
  elseif k == 1 then
    -- a device with a fault: the filter matches stored alerts
    path = "/api/v1/alerts?device=" .. faulted[math.random(#faulted)]
  elseif k == 2 then
    -- any device: mostly no alerts, exercises the filtered empty result
    path = "/api/v1/alerts?device=" .. device_id(math.random(0, devices - 1))
  else
    path = "/api/v1/devices/" .. device_id(math.random(0, devices - 1))
  end
  return wrk.format("GET", path)
end

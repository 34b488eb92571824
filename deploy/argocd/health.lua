-- Argo CD health check for ecsvnc.io/VncPassword and ecsvnc.io/VncPasswordSet (resource.customizations.health.ecsvnc.io_<Kind>).
-- Argo CD runs this with the live object in the global `obj` and reads the returned table's
-- `status` and `message`. See README.md beside this file for how to install it and why each state
-- maps as it does.
local hs = {}

local function condition(conditions, type_)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function text(value)
  if value == nil then
    return ""
  end
  return tostring(value)
end

-- "Reason: message", or whichever of the two is set.
local function describe(c)
  local reason = text(c.reason)
  local message = text(c.message)
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if reason ~= "" then
    return reason
  end
  return message
end

-- Paused by the user: nothing will happen until the annotation goes, with or without a controller.
local annotations = obj.metadata ~= nil and obj.metadata.annotations or nil
if annotations ~= nil and annotations["ecsvnc.io/paused"] == "true" then
  hs.status = "Suspended"
  hs.message = "Paused: ecsvnc.io/paused is \"true\"; no ECS calls are made until it is removed"
  return hs
end

local status = obj.status
if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller"
  return hs
end

-- The conditions describe an older spec until the controller has seen the current generation.
local generation = obj.metadata ~= nil and obj.metadata.generation or nil
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe generation " .. text(generation)
  return hs
end

-- The same rules as kstatus (Flux): Stalled=True is Degraded, Reconciling=True Progressing, Ready=True
-- Healthy (Paused: Suspended), anything else Progressing. A state only a person or a closed reboot
-- window can end is Ready=True, so a sync never hangs on it; InEffect says whether the console
-- accepts the applied password yet.
local conditions = status.conditions
local stalled = condition(conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

local reconciling = condition(conditions, "Reconciling")
local ready = condition(conditions, "Ready")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  if text(reconciling.message) ~= "" then
    hs.message = describe(reconciling)
  elseif ready ~= nil and text(ready.message) ~= "" then
    hs.message = describe(ready)
  else
    hs.message = "Waiting for the controller"
  end
  return hs
end

if ready ~= nil and ready.status == "True" then
  if ready.reason == "Paused" then
    hs.status = "Suspended"
    hs.message = describe(ready)
    return hs
  end
  hs.status = "Healthy"
  local inEffect = condition(conditions, "InEffect")
  if inEffect ~= nil and inEffect.status ~= "True" and text(inEffect.message) ~= "" then
    -- Applied, waiting for a restart (a person) or a reboot window: healthy, and says so.
    hs.message = describe(inEffect)
  else
    hs.message = text(ready.message)
  end
  return hs
end

hs.status = "Progressing"
if ready ~= nil and text(ready.message) ~= "" then
  hs.message = describe(ready)
else
  hs.message = "Waiting for the controller"
end
return hs

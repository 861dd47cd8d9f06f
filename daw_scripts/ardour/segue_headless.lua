-- Segue for Ardour's headless Lua tool (ardour7-lua), driven by segue_ardour_headless.py.
--
-- The headless tool has no editor selection and no import call, so:
--   * the "selection" is a range marker (default name "segue") and the regions of one track under it;
--   * importing the rendered file is done by ardour_session.py on the closed session, and
--   * placement then goes through the same SegueLib.place as the editor action (one undo step).
--
--   ardour7-lua segue_headless.lua render SESSION_DIR NAME TASK TRACK MARKER KEY=VALUE...
--       prints "SEGUE_RESULT <json>" with the reply (every take's path), the timeline position and
--       the session rate; KEY=VALUE are SegueLib.prepare's options (takes=3, snap=1, ...)
--   ardour7-lua segue_headless.lua place SESSION_DIR NAME CLIP1[,CLIP2...] POSITION TRACK LABEL [SRC_TRACK MARKER [B_TARGET]]
--       places the takes layered on TRACK (one undo step); with SRC_TRACK and MARKER (a transition)
--       also trims the two regions under the marker, moving B so that what it played at timeline
--       sample B_TARGET (the render step's "b_target") plays at the clip's end; prints "SEGUE_PLACED <track> <position> <length>"
--       per take and "SEGUE_TRIMMED <name> <position> <length> <start>" per trimmed region

local here = (debug.getinfo (1, "S").source:match ("^@(.*/)") or "./")
function ardour (_) end  -- the editor action's header is a no-op here
dofile (here .. "segue.lua")
local L = SegueLib

local function fail (msg)
	print ("SEGUE_ERROR " .. msg)
	close_session ()
	quit ()
	os.exit (1)
end

local mode, dir, name = arg[1], arg[2], arg[3]
AudioEngine:set_backend ("None (Dummy)", "", "")
local s = load_session (dir, name)
if not s then print ("SEGUE_ERROR cannot load session " .. tostring (dir)); os.exit (1) end
local rate = s:nominal_sample_rate ()

local function json_string (v)
	return '"' .. tostring (v):gsub ('[%c"\\]', function (c) return string.format ("\\u%04x", c:byte ()) end) .. '"'
end

--- The regions of `track_name` that overlap the range marker `marker`, in timeline order.
local function marked_regions (track_name, marker)
	local loc = nil
	for l in s:locations ():list ():iter () do
		if l:name () == marker and l:is_range_marker () then loc = l end
	end
	if not loc then fail ("no range marker named " .. marker) end
	local sel_a, sel_b = loc:start ():samples (), loc:_end ():samples ()
	local route = s:route_by_name (track_name)
	if route:isnil () or route:to_track ():isnil () then fail ("no track named " .. track_name) end
	local regions = {}
	for r in route:to_track ():playlist ():region_list ():iter () do
		local p, n = r:position ():samples (), r:length ():samples ()
		if p < sel_b and p + n > sel_a then regions[#regions + 1] = r end
	end
	table.sort (regions, function (x, y) return x:position ():samples () < y:position ():samples () end)
	return regions, sel_a, sel_b
end

if mode == "render" then
	local task, track_name, marker = arg[4], arg[5], arg[6]
	local opts = {}
	for i = 7, #arg do
		local k, v = arg[i]:match ("^([%w_]+)=(.*)$")
		if not k then fail ("bad option " .. arg[i]) end
		opts[k] = tonumber (v) or v
	end
	-- the selected regions: those on the track that overlap the marker (a transition takes two)
	local regions, sel_a, sel_b = marked_regions (track_name, marker)
	for _, r in ipairs (regions) do
		local f = L.region_facts (r)
		print (string.format ("SEGUE_REGION %s position=%d length=%d start=%d channels=%d source=%s",
		                      f.name, f.position, f.length, f.start, f.channels, tostring (f.source)))
	end
	local workdir = ARDOUR.LuaAPI.build_filename (s:path (), "segue")
	os.execute ("mkdir -p " .. L.shell_quote (workdir))
	local use_range = task ~= "transition" and task ~= "continue"
	local plan, err = L.prepare (task, regions, use_range and sel_a or nil, use_range and sel_b or nil,
	                             rate, workdir, opts)
	if not plan then fail (err) end
	local cmd = L.client_command (plan.req)
	print ("SEGUE_COMMAND " .. cmd)
	local takes, cerr = L.run_client (cmd, function (frac, line) print ("SEGUE_PROGRESS " .. frac); return false end)
	if not takes then fail ("render failed: " .. tostring (cerr)) end
	local reply = takes[1]
	local position = L.timeline_position (plan.origin, reply.offset_s, rate)
	local paths = {}
	for i, t in ipairs (takes) do paths[i] = json_string (t.path) end
	local b_target = (task == "transition") and L.transition_b_target (plan, reply, rate) or -1
	print (string.format ('SEGUE_RESULT {"path": %s, "paths": [%s], "offset_s": %.9f, "duration_s": %.9f, '
	                      .. '"model_rate": %d, "session_rate": %d, "origin": %d, "position": %d, "input": %s, '
	                      .. '"bpm": %.9f, "beat_offset_s": %.9f, "sel_start": %d, "sel_end": %d, '
	                      .. '"b_origin": %d, "b_target": %d}',
	                      json_string (reply.path), table.concat (paths, ", "), reply.offset_s, reply.duration_s,
	                      reply.sample_rate or 0, rate, plan.origin, position, json_string (plan.req.audio[1]),
	                      plan.req.bpm, plan.req.beat_offset_s, plan.sel_start or -1, plan.sel_end or -1,
	                      plan.b_origin or -1, b_target))
elseif mode == "place" then
	local clip_names, position, track_name, label = arg[4], tonumber (arg[5]), arg[6], arg[7]
	-- found by name, as the editor action finds what do_import created
	local regions = {}
	for clip_name in clip_names:gmatch ("[^,]+") do
		local region = L.region_by_name (clip_name)
		if not region then fail ("no whole-file region named " .. clip_name) end
		regions[#regions + 1] = region
	end
	local trim = nil
	if arg[8] and arg[9] then
		local sources = marked_regions (arg[8], arg[9])
		if #sources ~= 2 then fail ("a transition trims two regions; found " .. #sources .. " under the marker") end
		trim = { a = sources[1], b = sources[2], b_target = arg[10] and tonumber (arg[10]) or nil }
	end
	local placed, track = L.place_takes (s, regions, position, track_name, label, trim)
	for _, nr in ipairs (placed) do
		print (string.format ("SEGUE_PLACED %s %d %d", track:name (), nr:position ():samples (), nr:length ():samples ()))
	end
	if trim then
		for _, r in ipairs ({ trim.a, trim.b }) do
			print (string.format ("SEGUE_TRIMMED %s %d %d %d", r:name (), r:position ():samples (), r:length ():samples (),
			                      r:start ():samples ()))
		end
	end
	s:save_state ("", false, false, false, false, false)
	print ("SEGUE_SAVED")
else
	fail ("usage: segue_headless.lua render|place ...")
end
close_session ()
quit ()

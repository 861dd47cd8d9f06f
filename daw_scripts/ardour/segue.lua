ardour {
	["type"]    = "EditorAction",
	name        = "Segue: Render Selection",
	license     = "MIT",
	author      = "Segue",
	description = [[Infill, regenerate, continue, restyle (one selected region, optionally with a time range) or
transition (two selected regions) through the Segue daemon. The rendered clip is placed on a "Segue" track,
aligned to the selection, as one undo step. Needs `segue serve` running and `segue-client` on PATH
(or SEGUE_CLIENT set to its full path).]]
}

-- The library part (no GUI): used by the editor action below and by segue_headless.lua, so the
-- selection arithmetic, the client call and the placement are the same code in both.
local L = {}
SegueLib = L

L.TASKS = { "infill", "regenerate", "continue", "transition", "style" }
L.CONTEXT_S = 4.0        -- audio exported around the selection, so the engine sees context on both sides
L.TRACK_NAME = "Segue"
L.EDGE_FADE_S = 0.01     -- where a transition meets the trimmed regions: they overlap it by this, with fades
L.NOT_RUNNING = "The Segue daemon is not running: start it with `segue serve` and try again."
L.NO_CLIENT = "segue-client was not found on the PATH Ardour sees: set SEGUE_CLIENT to its full command line "
	.. "(e.g. /home/me/venv/bin/segue-client) before starting Ardour."

--- Quote one word for /bin/sh.
function L.shell_quote (s)
	return "'" .. (tostring (s):gsub ("'", "'\\''")) .. "'"
end

--- Format a number for the command line: plain decimal, 6 decimals, no exponent.
function L.num (x)
	return string.format ("%.6f", x)
end

--- The segue-client command line for a request table (see README.md for the fields).
function L.client_command (req)
	local client = req.client or os.getenv ("SEGUE_CLIENT") or "segue-client"
	local parts = { client, req.task }
	for _, a in ipairs (req.audio) do parts[#parts + 1] = L.shell_quote (a) end
	local opts = {
		{ "--start", req.start_s }, { "--end", req.end_s }, { "--duration", req.duration_s },
		{ "--b-start", req.b_start_s }, { "--crossfade", req.crossfade_s }, { "--join-search", req.join_search_s },
		{ "--strength", req.strength }, { "--bpm", req.bpm }, { "--beat-offset", req.beat_offset_s },
	}
	for _, o in ipairs (opts) do
		if o[2] ~= nil then parts[#parts + 1] = o[1] .. " " .. L.num (o[2]) end
	end
	for _, o in ipairs ({ { "--preset", req.preset }, { "--model", req.model }, { "--reference", req.reference },
	                      { "--endpoint", req.endpoint or os.getenv ("SEGUE_ENDPOINT") } }) do
		if o[2] ~= nil and o[2] ~= "" then parts[#parts + 1] = o[1] .. " " .. L.shell_quote (o[2]) end
	end
	if req.steps then parts[#parts + 1] = "--steps " .. string.format ("%d", req.steps) end
	if req.seed then parts[#parts + 1] = "--seed " .. string.format ("%d", req.seed) end
	if req.timeout_s then parts[#parts + 1] = "--timeout " .. L.num (req.timeout_s) end
	parts[#parts + 1] = "--variations " .. string.format ("%d", req.variations or 1)
	parts[#parts + 1] = "--span region --json"
	return table.concat (parts, " ")
end

--- Parse a JSON object or array (strings, numbers, booleans, null, nested objects and arrays) into
--- Lua tables (arrays 1-based). Enough for segue-client's reply; returns nil on anything else.
function L.parse_json (s)
	local pos = 1
	local function ws () pos = s:find ("[^ \t\r\n]", pos) or #s + 1 end
	local value
	local function str ()
		local out = {}
		pos = pos + 1
		while true do
			local c = s:sub (pos, pos)
			if c == "" then return nil end
			if c == '"' then pos = pos + 1; return table.concat (out) end
			if c == "\\" then
				local e = s:sub (pos + 1, pos + 1)
				local map = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
				if e == "u" then
					local code = tonumber (s:sub (pos + 2, pos + 5), 16)
					if not code then return nil end
					out[#out + 1] = utf8.char (code)
					pos = pos + 6
				elseif map[e] then
					out[#out + 1] = map[e]; pos = pos + 2
				else
					return nil
				end
			else
				out[#out + 1] = c; pos = pos + 1
			end
		end
	end
	local function obj ()
		local t = {}
		pos = pos + 1
		ws ()
		if s:sub (pos, pos) == "}" then pos = pos + 1; return t end
		while true do
			ws ()
			if s:sub (pos, pos) ~= '"' then return nil end
			local k = str ()
			if k == nil then return nil end
			ws ()
			if s:sub (pos, pos) ~= ":" then return nil end
			pos = pos + 1
			ws ()
			local ok, v = value ()
			if not ok then return nil end
			t[k] = v
			ws ()
			local c = s:sub (pos, pos)
			pos = pos + 1
			if c == "}" then return t end
			if c ~= "," then return nil end
		end
	end
	local function arr ()
		local t = {}
		pos = pos + 1
		ws ()
		if s:sub (pos, pos) == "]" then pos = pos + 1; return t end
		while true do
			ws ()
			local ok, v = value ()
			if not ok then return nil end
			t[#t + 1] = v
			ws ()
			local c = s:sub (pos, pos)
			pos = pos + 1
			if c == "]" then return t end
			if c ~= "," then return nil end
		end
	end
	value = function ()
		local c = s:sub (pos, pos)
		if c == '"' then local v = str (); return v ~= nil, v end
		if c == "{" then local v = obj (); return v ~= nil, v end
		if c == "[" then local v = arr (); return v ~= nil, v end
		for lit, v in pairs ({ ["true"] = true, ["false"] = false }) do
			if s:sub (pos, pos + #lit - 1) == lit then pos = pos + #lit; return true, v end
		end
		if s:sub (pos, pos + 3) == "null" then pos = pos + 4; return true, nil end
		local num = s:match ("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
		if num and num ~= "" then pos = pos + #num; return tonumber (num) ~= nil, tonumber (num) end
		return false, nil
	end
	ws ()
	local c = s:sub (pos, pos)
	if c == "[" then return arr () end
	if c ~= "{" then return nil end
	return obj ()
end

--- A progress fraction (0..1) from one line of segue-client's stderr ("segue:  42.0% (step ...)").
function L.parse_progress (line)
	local pct = line:match ("^segue:%s*(%d+%.?%d*)%%")
	if pct then return tonumber (pct) / 100 end
	return nil
end

--- Run segue-client; `on_progress(fraction, line)` may return true to cancel (the client is sent SIGINT,
--- which cancels the job in the daemon). Returns the list of takes (each with path, offset_s,
--- duration_s), or nil and an error message (one sentence for a stopped daemon or a missing client).
function L.run_client (cmd, on_progress)
	-- the inner shell prints its pid and becomes the client (so SIGINT reaches the client); the outer one
	-- reports the exit status (127: the shell found no such command)
	local inner = "echo SEGUE_PID $$; exec " .. cmd
	local f = io.popen ("sh -c " .. L.shell_quote ("sh -c " .. L.shell_quote (inner) .. "; echo SEGUE_EXIT $?") .. " 2>&1", "r")
	if not f then return nil, "cannot start segue-client" end
	local pid, reply, last, cancelled, status = nil, nil, {}, false, nil
	for line in f:lines () do
		local p = line:match ("^SEGUE_PID (%d+)$")
		local e = line:match ("^SEGUE_EXIT (%d+)$")
		if p then
			pid = p
		elseif e then
			status = tonumber (e)
		elseif line:sub (1, 1) == "{" or line:sub (1, 1) == "[" then
			reply = L.parse_json (line)
		else
			last[#last + 1] = line
			if #last > 8 then table.remove (last, 1) end
			local frac = L.parse_progress (line)
			if frac and on_progress and not cancelled and on_progress (frac, line) and pid then
				cancelled = true
				os.execute ("kill -INT " .. pid)
			end
		end
	end
	f:close ()
	if cancelled then return nil, "cancelled" end
	if status == 127 then return nil, L.NO_CLIENT end
	if reply == nil then return nil, table.concat (last, "\n") end
	if reply.error then
		if reply.error.code == "unreachable" then return nil, L.NOT_RUNNING end
		return nil, string.format ("%s: %s", tostring (reply.error.code), tostring (reply.error.message))
	end
	if reply.path then reply = { reply } end   -- one object: a client without --variations
	for _, t in ipairs (reply) do
		if type (t.path) ~= "string" or type (t.offset_s) ~= "number" then
			return nil, "segue-client replied without a path and offset"
		end
	end
	if #reply == 0 then return nil, "segue-client replied with no takes" end
	return reply
end

--- The tempo map at timeline sample `sample`: tempo (quarter notes per minute), meter, and the bar
--- the sample lies in (its first sample, and the bar and beat lengths in samples). Bar lines are
--- found in musical time (whole ticks) and converted to samples by Ardour's own tempo map.
function L.grid_at (sample, rate)
	local tm = Temporal.TempoMap.read ()
	local p = Temporal.timepos_t (math.floor (sample))
	local m = tm:meter_at (p)
	local dpb, nv = m:divisions_per_bar (), m:note_value ()
	local bbt = tm:bbt_at (p)
	local tpq = Temporal.ticks_per_beat                  -- ticks per quarter note
	local qb, qt = tm:quarters_at (p):str ():match ("^(-?%d+):(%d+)$")
	local ticks = tonumber (qb) * tpq + tonumber (qt)    -- quarter-note ticks at `sample`
	local beat_ticks = math.floor (4 * tpq / nv)
	local bar0 = ticks - ((bbt.beats - 1) * beat_ticks + bbt.ticks)
	local function at (t) return Temporal.timepos_t.from_ticks (t):samples () end
	local start = at (bar0)
	return { bpm = tm:quarters_per_minute_at (p), divisions = dpb, note_value = nv, bar_start = start,
	         bar_len = at (bar0 + dpb * beat_ticks) - start, beat_len = at (bar0 + beat_ticks) - start }
end

--- The bar line nearest to `sample` (a sample position), and the grid there.
function L.nearest_bar (sample, rate)
	local g = L.grid_at (sample, rate)
	local b = g.bar_start
	if sample - b > g.bar_len / 2 then b = b + g.bar_len end
	return math.floor (b + 0.5), g
end

--- [a, b) (samples) moved to the nearest bar lines, at least one bar long.
function L.snap_to_bars (a, b, rate)
	local a2, g = L.nearest_bar (a, rate)
	local b2 = L.nearest_bar (b, rate)
	if b2 <= a2 then b2 = math.floor (a2 + g.bar_len + 0.5) end
	return a2, b2
end

--- The tempo hint for a request whose first input starts at timeline sample `origin`: the tempo,
--- and the first bar line in the input (or, if the input is shorter than to the next bar line, its
--- first beat), as seconds into the input.
function L.tempo_hint (origin, length, rate)
	local g = L.grid_at (origin, rate)
	local bar = g.bar_start
	if bar < origin then bar = bar + g.bar_len end
	if bar - origin >= length then
		bar = g.bar_start + math.ceil ((origin - g.bar_start) / g.beat_len) * g.beat_len
	end
	return g.bpm, math.max (bar - origin, 0) / rate
end

--- Clamp the selection [sel_a, sel_b) to a region at [pos, pos + len) and add `ctx` samples of context
--- on each side (inside the region). All values are timeline samples.
function L.window (pos, len, sel_a, sel_b, ctx)
	local a, b = math.max (sel_a, pos), math.min (sel_b, pos + len)
	if b <= a then return nil, "the time selection does not overlap the region" end
	local w0, w1 = math.max (pos, a - ctx), math.min (pos + len, b + ctx)
	return { start = w0, length = w1 - w0, sel_start = a, sel_end = b }
end

--- Region facts used by the request (position, length, source offset, channels, first source file).
function L.region_facts (r)
	local ar = r:to_audioregion ()
	local facts = { name = r:name (), position = r:position ():samples (), length = r:length ():samples (),
	                start = r:start ():samples (), channels = ar:n_channels () }
	local fs = r:source (0):to_filesource ()
	if not fs:isnil () then facts.source = fs:path () end
	return facts
end

local function wav_header (channels, rate, frames)
	local data = frames * channels * 4
	return "RIFF" .. string.pack ("<I4", 36 + data) .. "WAVE"
		.. "fmt " .. string.pack ("<I4I2I2I4I4I2I2", 16, 3, channels, rate, rate * channels * 4, channels * 4, 32)
		.. "data" .. string.pack ("<I4", data)
end

--- Write `frames` samples of region `r`, from timeline sample `from`, as a float32 WAV at `rate`.
--- Reading through the region (not its files) covers the region's source offset, mono or stereo
--- regions, and Ardour's one-file-per-channel sources alike.
function L.write_region_wav (r, from, frames, rate, path)
	local rd = r:to_audioregion ():to_readable ()
	local nch = rd:n_channels ()
	local offset = from - r:position ():samples ()
	local block = 4096
	local cmem = ARDOUR.DSP.DspShm (block * nch)
	local f, err = io.open (path, "wb")
	if not f then return false, err end
	f:write (wav_header (nch, rate, frames))
	local done = 0
	while done < frames do
		local n = math.min (block, frames - done)
		local chans = {}
		for c = 0, nch - 1 do
			local got = rd:read (cmem:to_float (c * block), offset + done, n, c)
			chans[c + 1] = cmem:to_float (c * block):array ()
			for i = got + 1, n do chans[c + 1][i] = 0 end
		end
		local vals = {}
		for i = 1, n do
			for c = 1, nch do vals[#vals + 1] = chans[c][i] end
		end
		f:write (string.pack ("<" .. string.rep ("f", #vals), table.unpack (vals)))
		done = done + n
	end
	f:close ()
	return true
end

--- Build the request for `task` from selected regions and a time range (timeline samples; the range
--- may be nil). Exports the audio the engine needs into `workdir` and returns
--- { req = client request table, origin = timeline sample of second 0 of the first input }.
function L.prepare (task, regions, sel_a, sel_b, rate, workdir, opts)
	opts = opts or {}
	local ctx = math.floor ((opts.context_s or L.CONTEXT_S) * rate)
	local req = { task = task, preset = opts.preset, steps = opts.steps, seed = opts.seed, model = opts.model,
	              strength = opts.strength, reference = opts.reference, endpoint = opts.endpoint,
	              timeout_s = opts.timeout_s, variations = opts.takes, audio = {} }
	local snap = opts.snap and opts.snap ~= 0 and opts.snap ~= "0"
	if snap and sel_a and sel_b and task ~= "transition" and task ~= "continue" then
		sel_a, sel_b = L.snap_to_bars (sel_a, sel_b, rate)
	end
	local function with_tempo (plan, length)
		plan.req.bpm, plan.req.beat_offset_s = L.tempo_hint (plan.origin, length, rate)
		return plan
	end
	local stamp = tostring (os.time ()) .. "-" .. tostring (math.random (100000, 999999))
	local function export (r, w, tag)
		local path = workdir .. "/segue-" .. stamp .. "-" .. tag .. ".wav"
		local ok, err = L.write_region_wav (r, w.start, w.length, rate, path)
		if not ok then error ("cannot write " .. path .. ": " .. tostring (err)) end
		req.audio[#req.audio + 1] = path
	end
	if task == "transition" then
		if #regions ~= 2 then return nil, "select exactly two regions for a transition" end
		local a, b = regions[1], regions[2]
		if b:position ():samples () < a:position ():samples () then a, b = b, a end
		local pa, la = a:position ():samples (), a:length ():samples ()
		local pb, lb = b:position ():samples (), b:length ():samples ()
		local a_end = pa + la
		if pb > a_end then return nil, "the two regions must overlap or touch for a transition" end
		local join = math.floor ((pb + a_end) / 2)        -- the middle of the overlap
		local xf = opts.crossfade_s and math.floor (opts.crossfade_s * rate) or math.max (a_end - pb, math.floor (2.5 * rate))
		local wa = { start = math.max (pa, join - xf - ctx) }
		wa.length = math.min (a_end, join + xf) - wa.start
		local wb = { start = math.max (pb, join - xf) }
		wb.length = math.min (pb + lb, join + xf + ctx) - wb.start
		if join - wa.start < xf / 2 or wb.start + wb.length - join < xf / 2 then
			return nil, "each region needs at least half the crossfade on its side of the join"
		end
		export (a, wa, "a"); export (b, wb, "b")
		req.start_s = (join - wa.start) / rate
		req.b_start_s = (join - wb.start) / rate
		req.crossfade_s = xf / rate
		req.join_search_s = opts.join_search_s   -- nil: the engine's default reach; 0 keeps these joins exactly
		return with_tempo ({ req = req, origin = wa.start, b_origin = wb.start, a = a, b = b }, wa.length)
	end
	if #regions ~= 1 then return nil, "select exactly one region for " .. task end
	local r = regions[1]
	local pos, len = r:position ():samples (), r:length ():samples ()
	if task == "continue" then
		local cut = pos + len
		if sel_a and sel_b and sel_b > pos and sel_b < pos + len then cut = sel_b end
		local w = { start = math.max (pos, cut - ctx) }
		w.length = cut - w.start
		export (r, w, "in")
		req.duration_s = opts.duration_s or ((sel_b and sel_b > cut) and (sel_b - cut) / rate) or 4.0
		if snap then
			local bar = L.grid_at (cut, rate).bar_len / rate
			req.duration_s = math.max (math.floor (req.duration_s / bar + 0.5), 1) * bar
		end
		return with_tempo ({ req = req, origin = w.start }, w.length)
	end
	local a, b = sel_a or pos, sel_b or (pos + len)
	local w, err = L.window (pos, len, a, b, ctx)
	if not w then return nil, err end
	export (r, w, "in")
	req.start_s = (w.sel_start - w.start) / rate
	req.end_s = (w.sel_end - w.start) / rate
	return with_tempo ({ req = req, origin = w.start, sel_start = w.sel_start, sel_end = w.sel_end }, w.length)
end

--- Where the rendered clip goes: the reply's offset_s is seconds into the first input, which starts
--- at timeline sample `origin` (all in session samples; the model's rate is not involved).
function L.timeline_position (origin, offset_s, rate)
	return origin + math.floor (offset_s * rate + 0.5)
end

--- A transition's B, placed so its audio continues the clip's B material: the timeline sample
--- (before the edit) where B plays what must come right after the clip. The engine may have moved
--- the joins and stretched B; segue-client's "transition" reply says which second of B's file
--- the clip's end has reached (B's own time). Without it (an older client, a remote daemon) the
--- requested joins stand: the clip's end is as far past the join in B as in A.
function L.transition_b_target (plan, take, rate)
	local t = take.transition
	local b_s = (type (t) == "table" and type (t.b_at_clip_end_s) == "number") and t.b_at_clip_end_s
		or (plan.req.b_start_s + take.offset_s + take.duration_s - plan.req.start_s)
	return plan.b_origin + math.floor (b_s * rate + 0.5)
end

--- Find (or create) the output track.
function L.output_track (session, name, channels)
	local route = session:route_by_name (name)
	if not route:isnil () and not route:to_track ():isnil () then return route:to_track () end
	local tl = session:new_audio_track (channels, 2, nil, 1, name, ARDOUR.PresentationInfo.max_order,
	                                    ARDOUR.TrackMode.Normal, true)
	local track = nil
	for t in tl:iter () do track = t; break end
	-- The GUI auto-connects new tracks to the master bus; the headless tool does not. Connect any
	-- unconnected output so the track is heard (and exported) either way.
	local master = session:master_out ()
	if not master:isnil () then
		local outs, ins = track:output (), master:input ()
		local n_in = ins:n_ports ():n_audio ()
		for i = 0, outs:n_ports ():n_audio () - 1 do
			local port = outs:audio (i)
			if n_in > 0 and not port:connected () then
				port:connect (ins:audio (i % n_in):name ())
			end
		end
	end
	return track
end

--- Place a copy of `region` at timeline sample `position` on track `track_name`: one undo step.
function L.place (session, region, position, track_name, label)
	local placed, track = L.place_takes (session, { region }, position, track_name, label)
	return placed[1], track
end

--- Place copies of the take regions at `position` on the output track, layered (take 1 on top: the
--- one that plays; the others lie under it, to audition with Layers > Raise/Lower or in Stacked
--- layer display), named "Segue <label> take N". `trim` = { a = region, b = region, b_target = sample }
--- (a transition) also trims A to end EDGE_FADE_S after the transition starts, moves B so that
--- what it played at b_target (L.transition_b_target) plays at the transition's end, and trims B to
--- start EDGE_FADE_S before that end, with fades over the overlaps. All in one undo step.
function L.place_takes (session, regions, position, track_name, label, trim)
	local track = L.output_track (session, track_name or L.TRACK_NAME, 2)
	local pl = track:playlist ()
	local rate = session:nominal_sample_rate ()
	local fade = math.max (math.floor (L.EDGE_FADE_S * rate + 0.5), 1)
	session:begin_reversible_command ("Segue " .. (label or "render"))
	pl:to_stateful ():clear_changes ()
	local placed = {}
	for i = #regions, 1, -1 do   -- added last = the top layer
		local nr = ARDOUR.RegionFactory.clone_region (regions[i], true, true)
		if #regions > 1 then nr:set_name (string.format ("Segue %s take %d", label or "render", i)) end
		pl:add_region (nr, Temporal.timepos_t (position), 1, false, 0, 0, false)
		placed[i] = nr
	end
	if trim then
		local x1 = position + placed[1]:length ():samples ()
		for _, nr in ipairs (placed) do
			local ar = nr:to_audioregion ()
			ar:set_fade_in_length (fade)
			ar:set_fade_out_length (fade)
		end
		local a, b = trim.a, trim.b
		for _, r in ipairs ({ a, b }) do r:to_stateful ():clear_changes () end
		a:trim_end (Temporal.timepos_t (position + fade))
		a:to_audioregion ():set_fade_out_length (fade)
		local shift = trim.b_target and (x1 - trim.b_target) or 0
		if shift ~= 0 then b:set_position (Temporal.timepos_t (b:position ():samples () + shift)) end
		b:trim_front (Temporal.timepos_t (x1 - fade))
		b:to_audioregion ():set_fade_in_length (fade)
		for _, r in ipairs ({ a, b }) do session:add_stateful_diff_command (r:to_statefuldestructible ()) end
	end
	session:add_stateful_diff_command (pl:to_statefuldestructible ())
	session:commit_reversible_command (nil)
	return placed, track
end

--- The newest region in the session's region list named `name` (what an import just created).
function L.region_by_name (name)
	local found = nil
	for _, r in ARDOUR.RegionFactory.regions ():iter () do
		if r:name () == name and r:whole_file () then found = r end
	end
	return found
end

-- The editor action (GUI only: Editor, LuaDialog and do_import do not exist in the headless tool).
function factory (params) return function ()
	local L = SegueLib
	local rate = Session:nominal_sample_rate ()
	local sel = Editor:get_selection ()
	local regions = {}
	for r in sel.regions:regionlist ():iter () do
		if not r:to_audioregion ():isnil () then regions[#regions + 1] = r end
	end
	local sel_a, sel_b = nil, nil
	if not sel.time:empty () then sel_a, sel_b = sel.time:start_sample (), sel.time:end_sample () end
	if #regions == 0 and sel_a then
		-- a range drawn with the range tool selects time and tracks, not regions (and clicking a region
		-- clears the range): take the audio regions of the selected tracks under the range
		for route in sel.tracks:routelist ():iter () do
			local tr = route:to_track ()
			if not tr:isnil () then
				for r in tr:playlist ():region_list ():iter () do
					local p, n = r:position ():samples (), r:length ():samples ()
					if p < sel_b and p + n > sel_a and not r:to_audioregion ():isnil () then regions[#regions + 1] = r end
				end
			end
		end
		table.sort (regions, function (x, y) return x:position ():samples () < y:position ():samples () end)
	end

	local task_values = {}
	for _, t in ipairs (L.TASKS) do task_values[t] = t end
	local dlg = LuaDialog.Dialog ("Segue", {
		{ type = "dropdown", key = "task", title = "Task", values = task_values,
		  default = (#regions == 2) and "transition" or "infill" },
		{ type = "entry", key = "preset", title = "Preset (empty: the task's default)", default = "" },
		{ type = "number", key = "steps", title = "Steps (0: preset/model default)", min = 0, max = 1000, step = 1, digits = 0, default = 0 },
		{ type = "number", key = "seed", title = "Seed", min = 0, max = 2147483647, step = 1, digits = 0, default = 0 },
		{ type = "number", key = "duration", title = "Continue: seconds to generate", min = 0.5, max = 120, step = 0.5, digits = 1, default = 4 },
		{ type = "number", key = "strength", title = "Style: strength", min = 0.05, max = 1, step = 0.05, digits = 2, default = 0.7 },
		{ type = "entry", key = "model", title = "Model", default = "builtin" },
		{ type = "number", key = "takes", title = "Takes (layered on the Segue track)", min = 1, max = 16, step = 1, digits = 0, default = 1 },
		{ type = "checkbox", key = "snap", title = "Snap the range to whole bars", default = false },
		{ type = "checkbox", key = "keep_joins", title = "Transition: keep my join points (no beat search)", default = false },
	})
	local rv = dlg:run ()
	if not rv then return end
	local opts = { preset = rv.preset ~= "" and rv.preset or nil, steps = rv.steps > 0 and rv.steps or nil,
	               seed = rv.seed, model = rv.model ~= "" and rv.model or nil,
	               duration_s = rv.task == "continue" and rv.duration or nil,
	               strength = rv.task == "style" and rv.strength or nil,
	               takes = math.floor (rv.takes or 1), snap = rv.snap and 1 or nil,
	               join_search_s = (rv.task == "transition" and rv.keep_joins) and 0 or nil }
	if rv.task == "style" and not opts.preset then
		LuaDialog.Message ("Segue", "Style needs a style preset (e.g. lofi-warm); see `segue presets list`.",
		                   LuaDialog.MessageType.Error, LuaDialog.ButtonType.Close):run ()
		return
	end
	local workdir = ARDOUR.LuaAPI.build_filename (Session:path (), "segue")
	os.execute ("mkdir -p " .. L.shell_quote (workdir))
	local plan, err = L.prepare (rv.task, regions, sel_a, sel_b, rate, workdir, opts)
	if not plan then
		LuaDialog.Message ("Segue", err, LuaDialog.MessageType.Error, LuaDialog.ButtonType.Close):run ()
		return
	end
	local pdialog = LuaDialog.ProgressWindow ("Segue " .. rv.task, true)
	local takes, cerr = L.run_client (L.client_command (plan.req), function (frac, line)
		return pdialog:progress (frac, line)
	end)
	pdialog:done ()
	if not takes then
		if cerr == "cancelled" then return end   -- Cancel in the progress window: the job is cancelled, nothing placed
		local text = (cerr == L.NOT_RUNNING or cerr == L.NO_CLIENT) and cerr or ("Render failed: " .. tostring (cerr))
		LuaDialog.Message ("Segue", text, LuaDialog.MessageType.Error, LuaDialog.ButtonType.Close):run ()
		return
	end
	-- Import into the region list (Ardour converts the model's rate to the session's), then place them.
	local files = C.StringVector ()
	for _, t in ipairs (takes) do files:push_back (t.path) end
	Editor:do_import (files, Editing.ImportDistinctFiles, Editing.ImportAsRegion, ARDOUR.SrcQuality.SrcBest,
	                  ARDOUR.MidiTrackNameSource.SMFTrackName, ARDOUR.MidiTempoMapDisposition.SMFTempoIgnore,
	                  Temporal.timepos_t (0), ARDOUR.PluginInfo (), ARDOUR.Track (), false)
	local imported = {}
	for _, t in ipairs (takes) do
		local base = t.path:match ("([^/]+)%.[^./]+$") or t.path
		local region = L.region_by_name (base)
		if not region then
			LuaDialog.Message ("Segue", "Rendered " .. t.path .. " but could not find the imported region " .. base,
			                   LuaDialog.MessageType.Error, LuaDialog.ButtonType.Close):run ()
			return
		end
		imported[#imported + 1] = region
	end
	local trim = (rv.task == "transition")
		and { a = plan.a, b = plan.b, b_target = L.transition_b_target (plan, takes[1], rate) } or nil
	L.place_takes (Session, imported, L.timeline_position (plan.origin, takes[1].offset_s, rate), L.TRACK_NAME,
	               rv.task, trim)
end end

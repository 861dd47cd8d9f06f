-- Segue for REAPER (Lua ReaScript): render the selected item(s) / time selection with Segue.
--
-- Lua ReaScripts cannot open sockets, so this script shells out to `segue-client` with
-- reaper.ExecProcess and waits for it (REAPER is busy meanwhile; progress is not shown).
-- Set SEGUE_CLIENT (environment) to the client's full command line if it is not on PATH.
-- The logic is the same as segue_reaper.py (tested side by side against the same stand-in).

local S = {}
S.TASKS = { infill = true, regenerate = true, continue = true, transition = true, style = true }
S.DEFAULT_DURATION_S = 4.0
S.MIN_CROSSFADE_S = 2.5
S.EDGE_FADE_S = 0.01    -- the short fades where a transition meets the trimmed items (they overlap by this)
S.NOT_RUNNING = "The Segue daemon is not running: start it with `segue serve` and try again."
S.NO_CLIENT = "segue-client was not found on the PATH REAPER sees: set SEGUE_CLIENT to its full command line "
	.. "(e.g. /home/me/venv/bin/segue-client) before starting REAPER."

function S.quote (s)
	return "'" .. (tostring (s):gsub ("'", "'\\''")) .. "'"
end

function S.fmt (x) return string.format ("%.6f", x) end

function S.read_item (item)
	local take = reaper.GetActiveTake (item)
	if not take then return nil, "a selected item has no active take" end
	local src = reaper.GetMediaItemTake_Source (take)
	local filename = reaper.GetMediaSourceFileName (src)
	if not filename or filename == "" then return nil, "the selected take has no source file (MIDI or an empty item?)" end
	local rate = reaper.GetMediaItemTakeInfo_Value (take, "D_PLAYRATE")
	if math.abs (rate - 1.0) > 1e-9 then
		return nil, string.format ("the take plays at rate %g; Segue needs rate 1 (glue the item first)", rate)
	end
	return {
		position = reaper.GetMediaItemInfo_Value (item, "D_POSITION"),
		length = reaper.GetMediaItemInfo_Value (item, "D_LENGTH"),
		start_offset = reaper.GetMediaItemTakeInfo_Value (take, "D_STARTOFFS"),
		source = filename,
		handle = item,
	}
end

local function source_time (it, t) return it.start_offset + (t - it.position) end
local function timeline (it, s) return it.position + (s - it.start_offset) end

function S.read_selection ()
	local a, b = reaper.GetSet_LoopTimeRange (false, false, 0, 0, false)
	local items = {}
	for i = 0, reaper.CountSelectedMediaItems (0) - 1 do
		local it, err = S.read_item (reaper.GetSelectedMediaItem (0, i))
		if not it then return nil, nil, err end
		items[#items + 1] = it
	end
	if b > a then return { a, b }, items end
	return nil, items
end

--- REAPER's time map at t: tempo, time signature, and the bar t lies in (start and end, seconds).
function S.grid_at (t)
	local num, denom, bpm = reaper.TimeMap_GetTimeSigAtTime (0, t)
	local _, measures = reaper.TimeMap2_timeToBeats (0, t)
	return { bpm = bpm, num = num, denom = denom, bar_start = reaper.TimeMap2_beatsToTime (0, 0, measures),
	         bar_end = reaper.TimeMap2_beatsToTime (0, 0, measures + 1) }
end

local function nearest_bar_line (t)
	local g = S.grid_at (t)
	if t - g.bar_start <= g.bar_end - t then return g.bar_start end
	return g.bar_end
end

--- [a, b) moved to the nearest bar lines, at least one bar long.
function S.snap_to_bars (a, b)
	local a2, b2 = nearest_bar_line (a), nearest_bar_line (b)
	if b2 <= a2 then b2 = S.grid_at (a2).bar_end end
	return a2, b2
end

--- --bpm and --beat-offset (a bar line, as seconds in the reference item's source).
local function tempo_args (ref, at)
	local g = S.grid_at (at)
	local bar, len = g.bar_start, g.bar_end - g.bar_start
	while source_time (ref, bar) < 0 do bar = bar + len end
	return { "--bpm", S.fmt (g.bpm), "--beat-offset", S.fmt (source_time (ref, bar)) }
end

--- segue-client arguments (a list) for `task`, and the item whose source timeline offset_s refers to.
--- With `snap`, the range moves to the nearest bar lines and a continuation lasts whole bars; every
--- request carries REAPER's tempo at the selection. `join_search_s` (transition) bounds how far the
--- engine may move the joins (0: keep them; nil: the engine's default).
function S.plan (task, sel, items, duration_s, snap, join_search_s)
	local args, ref, at = S.plan_times (task, sel, items, duration_s, snap, join_search_s)
	if not args then return nil, ref end
	for _, a in ipairs (tempo_args (ref, at)) do args[#args + 1] = a end
	return args, ref
end

function S.plan_times (task, sel, items, duration_s, snap, join_search_s)
	if task == "transition" then
		if #items ~= 2 then return nil, "select exactly two items for a transition" end
		local a, b = items[1], items[2]
		if b.position < a.position then a, b = b, a end
		local a_end = a.position + a.length
		if b.position > a_end then return nil, "the two items must overlap (or touch) for a transition" end
		local join = (b.position + a_end) / 2
		local xf = math.max (a_end - b.position, S.MIN_CROSSFADE_S)
		local args = { a.source, b.source, "--start", S.fmt (source_time (a, join)), "--b-start", S.fmt (source_time (b, join)),
		               "--crossfade", S.fmt (xf) }
		if join_search_s then
			args[#args + 1] = "--join-search"
			args[#args + 1] = S.fmt (join_search_s)
		end
		return args, a, join
	end
	if #items ~= 1 then return nil, string.format ("select exactly one item for %s (got %d)", task, #items) end
	local it = items[1]
	local item_end = it.position + it.length
	if task == "continue" then
		local cut = item_end
		if sel and sel[2] > it.position and sel[2] < item_end then cut = sel[2] end
		local dur = duration_s
		if not dur then dur = (sel and sel[2] > cut) and (sel[2] - cut) or S.DEFAULT_DURATION_S end
		if snap then
			local g = S.grid_at (cut)
			local len = g.bar_end - g.bar_start
			dur = math.max (math.floor (dur / len + 0.5), 1) * len
		end
		return { it.source, "--start", S.fmt (source_time (it, cut)), "--duration", S.fmt (dur) }, it, cut
	end
	local a, b = it.position, item_end
	if sel then a, b = sel[1], sel[2] end
	if snap then a, b = S.snap_to_bars (a, b) end
	a, b = math.max (a, it.position), math.min (b, item_end)
	if b <= a then return nil, "the time selection does not overlap the selected item" end
	return { it.source, "--start", S.fmt (source_time (it, a)), "--end", S.fmt (source_time (it, b)) }, it, a
end

function S.command (task, args, choice)
	local parts = { os.getenv ("SEGUE_CLIENT") or "segue-client", task }
	for _, a in ipairs (args) do
		local plain = a:match ("^%-%-[%w-]+$") or a:match ("^%-?%d+%.?%d*$")  -- flags and numbers
		parts[#parts + 1] = plain and a or S.quote (a)
	end
	if choice.preset then parts[#parts + 1] = "--preset " .. S.quote (choice.preset) end
	if choice.steps then parts[#parts + 1] = "--steps " .. string.format ("%d", choice.steps) end
	if choice.seed then parts[#parts + 1] = "--seed " .. string.format ("%d", choice.seed) end
	if choice.model then parts[#parts + 1] = "--model " .. S.quote (choice.model) end
	parts[#parts + 1] = "--variations " .. string.format ("%d", choice.takes or 1)
	parts[#parts + 1] = "--span region --json"
	return table.concat (parts, " ")
end

local function unescape (s) return (s:gsub ('\\"', '"'):gsub ("\\\\", "\\")) end

--- The takes in segue-client's one-line JSON reply (a list of objects with path and offset_s; one
--- object without --variations), or its error code and message.
function S.parse_reply (text)
	for line in text:gmatch ("[^\n]+") do
		local c = line:sub (1, 1)
		if c == "{" or c == "[" then
			local code = line:match ('"code"%s*:%s*"([^"]*)"')
			if code then return nil, code .. ": " .. (line:match ('"message"%s*:%s*"(.-)"%s*[,}]') or ""), code end
			local takes = {}
			for obj in line:gmatch ("%b{}") do
				local path = obj:match ('"path"%s*:%s*"(.-)"%s*[,}]')
				local offset = tonumber (obj:match ('"offset_s"%s*:%s*(-?[%d%.eE+-]+)'))
				-- a transition's "transition" object: the second of B's file the clip's end has reached
				local b_end = tonumber (obj:match ('"b_at_clip_end_s"%s*:%s*(-?[%d%.eE+-]+)'))
				if path and offset then
					takes[#takes + 1] = { path = unescape (path), offset_s = offset, b_at_clip_end_s = b_end }
				end
			end
			if #takes > 0 then return takes end
		end
	end
	return nil, "segue-client gave no result"
end

--- Run segue-client and wait; returns the list of takes, or nil and a message for the user.
function S.render (task, args, choice)
	local cmd = S.command (task, args, choice)
	local out = reaper.ExecProcess (cmd, 0)  -- "exit code\noutput", 0: wait until it ends
	if not out then return nil, "could not run segue-client" end
	local status, text = out:match ("^(%-?%d+)\n(.*)$")
	if status == "127" then return nil, S.NO_CLIENT end   -- the shell found no such command
	local takes, err, code = S.parse_reply (text or out)
	if code == "unreachable" then return nil, S.NOT_RUNNING end
	if not takes then return nil, string.format ("render failed (exit %s): %s", tostring (status), err) end
	return takes
end

--- One item at `position` on a new track whose takes are the rendered files (take 1 active), as one
--- undo block (AddMediaItemToTrack & co.: no dialog can pop up, unlike InsertMedia). `trim` = {a, b, b_src}
--- (transition): A ends and B starts at the new item's edges, overlapping it by EDGE_FADE_S, with fades;
--- B is moved so that at the clip's end it plays b_src seconds of its source (where the clip's B
--- material ended; nil keeps B's audio where it was on the timeline).
function S.place (paths, position, label, trim)
	reaper.Undo_BeginBlock ()
	local index = reaper.CountTracks (0)
	reaper.InsertTrackAtIndex (index, true)
	local item = reaper.AddMediaItemToTrack (reaper.GetTrack (0, index))
	local length, first = 0, nil
	for n, path in ipairs (paths) do
		local take = reaper.AddTakeToMediaItem (item)
		local src = reaper.PCM_Source_CreateFromFile (path)
		reaper.SetMediaItemTake_Source (take, src)
		reaper.GetSetMediaItemTakeInfo_String (take, "P_NAME", string.format ("Segue %s take %d", label, n), true)
		length = math.max (length, (reaper.GetMediaSourceLength (src)))
		first = first or take
	end
	reaper.SetActiveTake (first)
	reaper.SetMediaItemInfo_Value (item, "D_POSITION", position)
	reaper.SetMediaItemInfo_Value (item, "D_LENGTH", length)
	if trim then
		local a, b, f = trim[1], trim[2], S.EDGE_FADE_S
		reaper.SetMediaItemInfo_Value (item, "D_FADEINLEN", f)
		reaper.SetMediaItemInfo_Value (item, "D_FADEOUTLEN", f)
		reaper.SetMediaItemInfo_Value (a.handle, "D_LENGTH", position + f - a.position)
		reaper.SetMediaItemInfo_Value (a.handle, "D_FADEOUTLEN", f)
		local x1 = position + length
		local offset = (trim[3] or source_time (b, x1)) - f       -- B's new start, in its source
		local source_end = b.start_offset + b.length               -- B still ends where its material did
		reaper.SetMediaItemInfo_Value (b.handle, "D_POSITION", x1 - f)
		reaper.SetMediaItemInfo_Value (b.handle, "D_LENGTH", source_end - offset)
		reaper.SetMediaItemTakeInfo_Value (reaper.GetActiveTake (b.handle), "D_STARTOFFS", offset)
		reaper.SetMediaItemInfo_Value (b.handle, "D_FADEINLEN", f)
		reaper.UpdateItemInProject (a.handle)
		reaper.UpdateItemInProject (b.handle)
	end
	reaper.UpdateItemInProject (item)
	reaper.Undo_EndBlock ("Segue " .. label, -1)
	reaper.UpdateArrange ()
	return item
end

function S.ask ()
	local ok, csv = reaper.GetUserInputs ("Segue", 8,
		"Task (infill/regenerate/continue/transition/style),Preset,Steps (0: default),Seed,Continue seconds,"
		.. "Takes (1-16),Snap to bars (y/n),Transition: keep join points (y/n)",
		"infill,,0,0,4,1,n,n")
	if not ok then return nil end
	local v = {}
	for field in (csv .. ","):gmatch ("([^,]*),") do v[#v + 1] = field:match ("^%s*(.-)%s*$") end
	local task = v[1]
	if not S.TASKS[task] then return nil, "unknown task " .. tostring (task) end
	local steps, seed, dur = tonumber (v[3] or ""), tonumber (v[4] or ""), tonumber (v[5] or "")
	local takes = tonumber (v[6] or "") or 1
	if takes < 1 or takes > 16 or takes ~= math.floor (takes) then
		return nil, "takes must be 1 to 16, got " .. tostring (v[6])
	end
	local snap, keep = (v[7] or ""):lower (), (v[8] or ""):lower ()
	return { task = task, preset = (v[2] ~= "" and v[2] or nil), steps = (steps and steps > 0) and steps or nil,
	         seed = seed or 0, duration_s = dur, takes = takes, snap = (snap == "y" or snap == "yes" or snap == "1"),
	         keep_joins = (keep == "y" or keep == "yes" or keep == "1") }
end

function S.run (choice)
	local sel, items, err = S.read_selection ()
	if not items then return nil, err end
	local args, ref = S.plan (choice.task, sel, items, choice.duration_s, choice.snap,
	                          choice.keep_joins and 0 or nil)
	if not args then return nil, ref end
	local takes, rerr = S.render (choice.task, args, choice)
	if not takes then return nil, rerr end
	local position = timeline (ref, takes[1].offset_s)
	local paths = {}
	for i, t in ipairs (takes) do paths[i] = t.path end
	local trim = nil
	if choice.task == "transition" then
		trim = { items[1], items[2] }
		if trim[2].position < trim[1].position then trim = { items[2], items[1] } end
		trim[3] = takes[1].b_at_clip_end_s
	end
	S.place (paths, position, choice.task, trim)
	return { position = position, path = takes[1].path, paths = paths, args = args }
end

SegueReaper = S

if not SEGUE_NO_MAIN then
	local choice, err = S.ask ()
	if choice then
		local done
		done, err = S.run (choice)
		if done then
			reaper.ShowConsoleMsg (string.format ("Segue: placed %d take(s) at %.3f s: %s\n", #done.paths, done.position,
			                                      table.concat (done.paths, ", ")))
		end
	end
	if err then reaper.ShowMessageBox (err, "Segue", 0) end
end

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

--- segue-client arguments (a list) for `task`, and the item whose source timeline offset_s refers to.
function S.plan (task, sel, items, duration_s)
	if task == "transition" then
		if #items ~= 2 then return nil, "select exactly two items for a transition" end
		local a, b = items[1], items[2]
		if b.position < a.position then a, b = b, a end
		local a_end = a.position + a.length
		if b.position > a_end then return nil, "the two items must overlap (or touch) for a transition" end
		local join = (b.position + a_end) / 2
		local xf = math.max (a_end - b.position, S.MIN_CROSSFADE_S)
		return { a.source, b.source, "--start", S.fmt (source_time (a, join)), "--b-start", S.fmt (source_time (b, join)),
		         "--crossfade", S.fmt (xf) }, a
	end
	if #items ~= 1 then return nil, string.format ("select exactly one item for %s (got %d)", task, #items) end
	local it = items[1]
	local item_end = it.position + it.length
	if task == "continue" then
		local cut = item_end
		if sel and sel[2] > it.position and sel[2] < item_end then cut = sel[2] end
		local dur = duration_s
		if not dur then dur = (sel and sel[2] > cut) and (sel[2] - cut) or S.DEFAULT_DURATION_S end
		return { it.source, "--start", S.fmt (source_time (it, cut)), "--duration", S.fmt (dur) }, it
	end
	local a, b = it.position, item_end
	if sel then a, b = sel[1], sel[2] end
	a, b = math.max (a, it.position), math.min (b, item_end)
	if b <= a then return nil, "the time selection does not overlap the selected item" end
	return { it.source, "--start", S.fmt (source_time (it, a)), "--end", S.fmt (source_time (it, b)) }, it
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
	parts[#parts + 1] = "--span region --json"
	return table.concat (parts, " ")
end

--- The fields of segue-client's one-line JSON reply that placement needs (path, offset_s), or its error.
function S.parse_reply (text)
	for line in text:gmatch ("[^\n]+") do
		if line:sub (1, 1) == "{" then
			local code = line:match ('"code"%s*:%s*"([^"]*)"')
			if code then return nil, code .. ": " .. (line:match ('"message"%s*:%s*"(.-)"%s*[,}]') or "") end
			local path = line:match ('"path"%s*:%s*"(.-)"%s*[,}]')
			local offset = tonumber (line:match ('"offset_s"%s*:%s*(-?[%d%.eE+-]+)'))
			if path and offset then return { path = path:gsub ('\\"', '"'):gsub ("\\\\", "\\"), offset_s = offset } end
		end
	end
	return nil, "segue-client gave no result"
end

function S.render (task, args, choice)
	local cmd = S.command (task, args, choice)
	local out = reaper.ExecProcess (cmd, 0)  -- "exit code\noutput", 0: wait until it ends
	if not out then return nil, "could not run segue-client" end
	local status, text = out:match ("^(%-?%d+)\n(.*)$")
	local reply, err = S.parse_reply (text or out)
	if not reply then return nil, string.format ("render failed (exit %s): %s", tostring (status), err) end
	return reply
end

function S.place (path, position, label)
	local cursor = reaper.GetCursorPosition ()
	reaper.Undo_BeginBlock ()
	reaper.SetEditCurPos (position, false, false)
	reaper.InsertMedia (path, 1)  -- 1: on a new track
	reaper.SetEditCurPos (cursor, false, false)
	reaper.Undo_EndBlock ("Segue " .. label, -1)
	reaper.UpdateArrange ()
end

function S.ask ()
	local ok, csv = reaper.GetUserInputs ("Segue", 5,
		"Task (infill/regenerate/continue/transition/style),Preset,Steps (0: default),Seed,Continue seconds",
		"infill,,0,0,4")
	if not ok then return nil end
	local v = {}
	for field in (csv .. ","):gmatch ("([^,]*),") do v[#v + 1] = field:match ("^%s*(.-)%s*$") end
	local task = v[1]
	if not S.TASKS[task] then return nil, "unknown task " .. tostring (task) end
	local steps, seed, dur = tonumber (v[3] or ""), tonumber (v[4] or ""), tonumber (v[5] or "")
	return { task = task, preset = (v[2] ~= "" and v[2] or nil), steps = (steps and steps > 0) and steps or nil,
	         seed = seed or 0, duration_s = dur }
end

function S.run (choice)
	local sel, items, err = S.read_selection ()
	if not items then return nil, err end
	local args, ref = S.plan (choice.task, sel, items, choice.duration_s)
	if not args then return nil, ref end
	local reply, rerr = S.render (choice.task, args, choice)
	if not reply then return nil, rerr end
	local position = timeline (ref, reply.offset_s)
	S.place (reply.path, position, choice.task)
	return { position = position, path = reply.path, args = args }
end

SegueReaper = S

if not SEGUE_NO_MAIN then
	local choice, err = S.ask ()
	if choice then
		local done
		done, err = S.run (choice)
		if done then reaper.ShowConsoleMsg (string.format ("Segue: placed %s at %.3f s\n", done.path, done.position)) end
	end
	if err then reaper.ShowMessageBox (err, "Segue", 0) end
end

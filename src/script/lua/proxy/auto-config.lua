-- proxy.auto-config: PROXY SHOW CONFIG, PROXY SET GLOBAL module.option = value,
-- PROXY SAVE CONFIG INTO "file", PROXY LOAD CONFIG FROM "file" on proxy.global.config.
-- Fixed against 0.8.5: option names may contain "_", true/false parse as booleans, file names
-- lose their quotes.
module("proxy.auto-config", package.seeall)

local function value_of(s)
	if s == "true" then return true end
	if s == "false" then return false end
	if tonumber(s) then return tonumber(s) end
	return (s:gsub("^[\"'](.*)[\"']$", "%1"))
end

local function unquote(s)
	return (s:gsub("^[\"'](.*)[\"']$", "%1"))
end

local function result(fields, rows)
	proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = { fields = fields, rows = rows } }
	return proxy.PROXY_SEND_RESULT
end

local function ok()
	proxy.response = { type = proxy.MYSQLD_PACKET_OK }
	return proxy.PROXY_SEND_RESULT
end

local function err(msg)
	proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = msg }
	return proxy.PROXY_SEND_RESULT
end

--- Answer a PROXY ... command (cmd from proxy.commands.parse); nil when it is not one.
function handle(cmd)
	if cmd.type ~= proxy.COM_QUERY then return nil end
	local q = cmd.query:gsub("^%s+", ""):gsub("%s*;?%s*$", "")
	if not q:upper():match("^PROXY%s") then return nil end
	local rest = q:sub(7):gsub("^%s+", "")
	local up = rest:upper()
	if up == "SHOW CONFIG" then
		local rows = {}
		for mod, opts in pairs(proxy.global_pairs(proxy.global.config)) do
			if type(opts) == "userdata" then
				for k, v in pairs(proxy.global_pairs(opts)) do
					rows[#rows + 1] = { mod, k, tostring(v), type(v) }
				end
			end
		end
		return result({ { name = "module" }, { name = "option" }, { name = "value" }, { name = "type" } }, rows)
	end
	local mod, opt, val = rest:match("^[Ss][Ee][Tt]%s+[Gg][Ll][Oo][Bb][Aa][Ll]%s+([%w_]+)%.([%w_]+)%s*=%s*(.-)$")
	if mod then
		if proxy.global.config[mod] == nil then proxy.global.config[mod] = {} end
		proxy.global.config[mod][opt] = value_of(val)
		return ok()
	end
	local file = rest:match("^[Ss][Aa][Vv][Ee]%s+[Cc][Oo][Nn][Ff][Ii][Gg]%s+[Ii][Nn][Tt][Oo]%s+(.+)$")
	if file then
		local f, e = io.open(unquote(file), "w")
		if not f then return err("cannot write " .. unquote(file) .. ": " .. tostring(e)) end
		for m, opts in pairs(proxy.global_pairs(proxy.global.config)) do
			if type(opts) == "userdata" then
				for k, v in pairs(proxy.global_pairs(opts)) do
					f:write(m .. "." .. k .. " = " .. tostring(v) .. "\n")
				end
			end
		end
		f:close()
		return ok()
	end
	file = rest:match("^[Ll][Oo][Aa][Dd]%s+[Cc][Oo][Nn][Ff][Ii][Gg]%s+[Ff][Rr][Oo][Mm]%s+(.+)$")
	if file then
		local f, e = io.open(unquote(file), "r")
		if not f then return err("cannot read " .. unquote(file) .. ": " .. tostring(e)) end
		for line in f:lines() do
			local m, k, v = line:match("^([%w_]+)%.([%w_]+)%s*=%s*(.-)%s*$")
			if m then
				if proxy.global.config[m] == nil then proxy.global.config[m] = {} end
				proxy.global.config[m][k] = value_of(v)
			end
		end
		f:close()
		return ok()
	end
	return err("unknown PROXY command: " .. q)
end

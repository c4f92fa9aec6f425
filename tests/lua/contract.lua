-- Answers "SHOW CONTRACT" with (name, value) rows that tests/lua.rs compares with the contract.
local tokenizer = require("proxy.tokenizer")
local commands = require("proxy.commands")
local balance = require("proxy.balance")
local password = require("mysql.password")
local proto = require("mysql.proto")
require("proxy.auto-config")
require("proxy.test")
require("chassis")

local function rows()
	local r = {}
	local function add(k, v) r[#r + 1] = { k, tostring(v) } end
	for _, k in ipairs({ "PROXY_SEND_QUERY", "PROXY_SEND_RESULT", "PROXY_IGNORE_RESULT",
		"MYSQLD_PACKET_OK", "MYSQLD_PACKET_ERR", "MYSQLD_PACKET_RAW", "MYSQLD_PACKET_EOF",
		"BACKEND_STATE_UNKNOWN", "BACKEND_STATE_UP", "BACKEND_STATE_DOWN", "BACKEND_TYPE_RW",
		"BACKEND_TYPE_RO", "PROXY_VERSION", "COM_QUERY", "COM_STMT_FETCH", "COM_RESET_CONNECTION",
		"MYSQL_TYPE_LONG", "MYSQL_TYPE_JSON", "MYSQL_TYPE_GEOMETRY" }) do
		add(k, proxy[k])
	end
	local toks = tokenizer.tokenize("SELECT a FROM `t` WHERE b = 'x' /* c */")
	add("first_token", tokenizer.first_stmt_token(toks).token_name)
	add("normalize", tokenizer.normalize(toks))
	add("bare", table.concat(tokenizer.bare_tokens(toks, true), " "))
	local cmd = commands.parse(string.char(proxy.COM_QUERY) .. "SELECT 1")
	add("command", cmd.type_name .. ":" .. cmd.query)
	add("backends", #proxy.global.backends)
	local b = proxy.global.backends[1]
	add("backend1", b.dst.name .. " " .. b.type .. " " .. b.state .. " " .. b.role)
	add("backend2_type", proxy.global.backends[2].type)
	add("rw", balance.idle_failsafe_rw())
	add("ro_is_replica", proxy.global.backends[balance.idle_ro()].type == proxy.BACKEND_TYPE_RO)
	local s1 = password.hash("secret")
	add("password", password.check("12345678901234567890", password.scramble("12345678901234567890", s1), password.hash(s1)))
	add("proto", proto.from_err_packet(proto.to_err_packet({ errcode = 1234, errmsg = "m", sqlstate = "HY000" })).errmsg)
	add("client", proxy.connection.client.username .. "@" .. proxy.connection.client.src.address)
	add("deprecated", select(2, pcall(function() return proxy.connection.thread_id end)))
	return r
end

function read_query(packet)
	if packet:sub(2) == "SHOW CONTRACT" then
		proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
			fields = { { name = "name" }, { name = "value" } }, rows = rows() } }
		return proxy.PROXY_SEND_RESULT
	end
	if packet:sub(2) == "SELECT 'boom'" then
		error("a runtime error in read_query")
	end
	if packet:sub(2) == "SELECT 'loop'" then
		while true do end
	end
end

-- Access control in two places:
-- connect_server refuses a client when $WEICHE_MAX_CLIENTS clients are connected already
-- (counted in proxy.global, which all connections share), before any backend is involved;
-- read_auth refuses the accounts named in $WEICHE_DENY_USERS (comma-separated) after their
-- password was checked.

local max_clients = tonumber(os.getenv("WEICHE_MAX_CLIENTS") or "100")
local denied = {}
for user in (os.getenv("WEICHE_DENY_USERS") or ""):gmatch("[^,]+") do
	denied[user] = true
end
local counted = false

function connect_server()
	local now = proxy.global.clients or 0
	if now >= max_clients then
		proxy.response = {
			type = proxy.MYSQLD_PACKET_ERR,
			errcode = 1040,
			sqlstate = "08004",
			errmsg = "too many clients (" .. max_clients .. ") for this script",
		}
		return proxy.PROXY_SEND_RESULT
	end
	proxy.global.clients = now + 1
	counted = true
end

function read_auth()
	local user = proxy.connection.client.username
	if denied[user] then
		proxy.response = {
			type = proxy.MYSQLD_PACKET_ERR,
			errcode = 1045,
			sqlstate = "28000",
			errmsg = "account '" .. user .. "' is not allowed through this proxy",
		}
		return proxy.PROXY_SEND_RESULT
	end
end

function disconnect_client()
	if counted then
		proxy.global.clients = (proxy.global.clients or 1) - 1
		counted = false
	end
end

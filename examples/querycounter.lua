-- A command answered by the script: SHOW QUERYCOUNTER returns how many queries this
-- connection and all connections together have sent (proxy.global is shared by all).

local mine = 0

function read_query(packet)
	if packet:byte() ~= proxy.COM_QUERY then
		return
	end
	mine = mine + 1
	proxy.global.queries = (proxy.global.queries or 0) + 1
	if packet:sub(2):upper():match("^%s*SHOW%s+QUERYCOUNTER%s*;?%s*$") then
		proxy.response = {
			type = proxy.MYSQLD_PACKET_OK,
			resultset = {
				fields = {
					{ name = "connection", type = proxy.MYSQL_TYPE_LONGLONG },
					{ name = "global", type = proxy.MYSQL_TYPE_LONGLONG },
				},
				rows = { { mine, proxy.global.queries } },
			},
		}
		return proxy.PROXY_SEND_RESULT
	end
end

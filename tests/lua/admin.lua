-- An admin script: answers SHOW COUNTER from proxy.global (which the proxy scripts fill);
-- everything else goes to Weiche's built-in admin commands.
function read_query(packet)
	if packet:sub(2):upper() == "SHOW COUNTER" then
		proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
			fields = { { name = "queries", type = proxy.MYSQL_TYPE_LONGLONG } },
			rows = { { proxy.global.queries or 0 } } } }
		return proxy.PROXY_SEND_RESULT
	end
end

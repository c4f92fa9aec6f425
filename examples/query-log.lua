-- A query log with timings: each query is sent as an injection, so read_query_result sees it
-- with inj.query_time (µs until the first packet of the answer) and inj.response_time (µs
-- until the last). One tab-separated line per query goes to $WEICHE_QUERY_LOG
-- (default /tmp/weiche-query.log).

local path = os.getenv("WEICHE_QUERY_LOG") or "/tmp/weiche-query.log"

function read_query(packet)
	if packet:byte() == proxy.COM_QUERY then
		proxy.queries:append(1, packet)
		return proxy.PROXY_SEND_QUERY
	end
end

function read_query_result(inj)
	local rs = inj.resultset
	local f = io.open(path, "a")
	if f then
		f:write(string.format("%s\t%s\t%d\t%d\t%s\t%s\n",
			os.date("!%Y-%m-%dT%H:%M:%SZ"),
			proxy.connection.client.username,
			inj.query_time, inj.response_time,
			rs.query_status == proxy.MYSQLD_PACKET_ERR and "ERR" or tostring(rs.row_count),
			inj.query:sub(2):gsub("%s+", " ")))
		f:close()
	end
end

-- Two injected queries, one result hidden: before each query the script asks the server for
-- its clock (id 1) and logs it; the client only sees the result of its own query (id 2).

function read_query(packet)
	if packet:byte() == proxy.COM_QUERY then
		proxy.queries:append(1, string.char(proxy.COM_QUERY) .. "SELECT NOW(6), @@port",
			{ resultset_is_needed = true })
		proxy.queries:append(2, packet)
		return proxy.PROXY_SEND_QUERY
	end
end

function read_query_result(inj)
	if inj.id == 1 then
		for row in inj.resultset.rows do
			print("server clock before the query: " .. row[1] .. " on port " .. row[2])
		end
		return proxy.PROXY_IGNORE_RESULT
	end
end

-- SHOW WARNINGS injected after results with warnings: each query runs as injection 1; when its
-- result has warnings, the script queues SHOW WARNINGS (injection 2, on the same server
-- connection), logs what it says and hides that result. The client sees only its own result.

function read_query(packet)
	if packet:byte() == proxy.COM_QUERY then
		proxy.queries:append(1, packet, { resultset_is_needed = true })
		return proxy.PROXY_SEND_QUERY
	end
end

function read_query_result(inj)
	if inj.id == 1 then
		if inj.resultset.warning_count > 0 then
			proxy.queries:append(2, string.char(proxy.COM_QUERY) .. "SHOW WARNINGS",
				{ resultset_is_needed = true })
		end
		return
	end
	for row in inj.resultset.rows do
		print(string.format("warning %s %s: %s", row[1], row[2], row[3]))
	end
	return proxy.PROXY_IGNORE_RESULT
end

-- A result rewritten by the script: for "SELECT ... /* shout */", Weiche buffers the answer
-- (resultset_is_needed), and the script sends its own result set instead: every value in
-- upper case, plus a column with the row's number.

function read_query(packet)
	if packet:byte() == proxy.COM_QUERY and packet:find("/* shout */", 1, true) then
		proxy.queries:append(1, packet, { resultset_is_needed = true })
		return proxy.PROXY_SEND_QUERY
	end
end

function read_query_result(inj)
	local rs = inj.resultset
	if rs.query_status == proxy.MYSQLD_PACKET_ERR then
		return -- the error goes to the client as it is
	end
	local fields = { { name = "n", type = proxy.MYSQL_TYPE_LONG } }
	for i = 1, #rs.fields do
		fields[#fields + 1] = { name = rs.fields[i].name, type = proxy.MYSQL_TYPE_STRING }
	end
	local rows, n = {}, 0
	for row in rs.rows do
		n = n + 1
		local out = { n }
		for i = 1, #rs.fields do
			out[i + 1] = row[i] and row[i]:upper() or nil
		end
		rows[n] = out
	end
	proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = { fields = fields, rows = rows } }
	return proxy.PROXY_SEND_RESULT
end

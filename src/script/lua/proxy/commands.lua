-- proxy.commands: take a client command packet apart.
module("proxy.commands", package.seeall)

local function u32(packet, at)
	local a, b, c, d = packet:byte(at, at + 3)
	return (a or 0) + (b or 0) * 256 + (c or 0) * 65536 + (d or 0) * 16777216
end

--- {type, type_name, and query / schema / table / stmt_handler_id / option}.
function parse(packet)
	local cmd = { type = packet:byte(1) }
	for name, value in pairs(proxy) do
		if type(name) == "string" and name:sub(1, 4) == "COM_" and value == cmd.type then
			cmd.type_name = name
		end
	end
	local t = cmd.type
	if t == proxy.COM_QUERY then
		cmd.query = packet:sub(2)
	elseif t == proxy.COM_INIT_DB or t == proxy.COM_CREATE_DB or t == proxy.COM_DROP_DB then
		cmd.schema = packet:sub(2)
	elseif t == proxy.COM_FIELD_LIST then
		cmd.table = packet:sub(2):match("^([^%z]*)")
	elseif t == proxy.COM_STMT_EXECUTE or t == proxy.COM_STMT_CLOSE or t == proxy.COM_STMT_RESET
		or t == proxy.COM_STMT_FETCH or t == proxy.COM_STMT_SEND_LONG_DATA then
		cmd.stmt_handler_id = u32(packet, 2)
	elseif t == proxy.COM_STMT_PREPARE then
		cmd.query = packet:sub(2)
	elseif t == proxy.COM_SET_OPTION then
		local a, b = packet:byte(2, 3)
		cmd.option = (a or 0) + (b or 0) * 256
	elseif t == proxy.COM_PROCESS_KILL then
		cmd.id = u32(packet, 2)
	end
	return cmd
end

function pretty_print(cmd)
	local s = "[" .. tostring(cmd.type_name or cmd.type) .. "]"
	for _, k in ipairs({ "query", "schema", "table", "stmt_handler_id", "option", "id" }) do
		if cmd[k] ~= nil then
			s = s .. " " .. k .. "=" .. string.format("%q", tostring(cmd[k]))
		end
	end
	return s
end

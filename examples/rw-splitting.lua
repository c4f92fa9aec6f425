-- Read/write splitting the mysql-proxy way: the script picks the backend for every query.
-- Reads outside a transaction go to the least loaded replica, everything else to the primary.
-- (Weiche splits by itself without a script; this shows the Lua API. Weiche refuses moves that
-- would lose session state: a transaction, a lock or a temporary table keeps its connection.)

local tokenizer = require("proxy.tokenizer")
local commands = require("proxy.commands")
local balance = require("proxy.balance")

-- Top-level locals are per connection: the chunk runs once for each client.
local in_transaction = false

local function first_word(query)
	local first = tokenizer.first_stmt_token(tokenizer.tokenize(query))
	if not first then
		return nil, nil
	end
	return first.token_name, first.text:upper()
end

function read_query(packet)
	local cmd = commands.parse(packet)
	if cmd.type ~= proxy.COM_QUERY then
		proxy.connection.backend_ndx = balance.idle_failsafe_rw()
		return
	end
	local name, word = first_word(cmd.query)
	if word == "BEGIN" or (word == "START" and cmd.query:upper():find("TRANSACTION")) then
		in_transaction = true
	end
	local is_read = name == "TK_SQL_SELECT"
		and not cmd.query:upper():find("FOR%s+UPDATE")
		and not cmd.query:upper():find("LAST_INSERT_ID")
	local target = 0
	if is_read and not in_transaction then
		target = balance.idle_ro()
	end
	if target == 0 then
		target = balance.idle_failsafe_rw()
	end
	proxy.connection.backend_ndx = target
	if name == "TK_SQL_COMMIT" or name == "TK_SQL_ROLLBACK" then
		in_transaction = false
	end
end

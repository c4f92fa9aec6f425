-- The cheapest script: read_query sees every command and decides nothing. scripts/bench runs
-- it to measure what calling Lua costs per query.

function read_query(packet)
	return nil
end

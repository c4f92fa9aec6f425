-- proxy.balance: backend choosers as in mysql-proxy. Weiche opens pooled connections on demand,
-- so "idle" means usable: a backend that is up.
module("proxy.balance", package.seeall)

--- The first usable read/write backend (0 when there is none).
function idle_failsafe_rw()
	for i = 1, #proxy.global.backends do
		local b = proxy.global.backends[i]
		if b.type == proxy.BACKEND_TYPE_RW and b.state ~= proxy.BACKEND_STATE_DOWN
			and b.state ~= proxy.BACKEND_STATE_OFFLINE then
			return i
		end
	end
	return 0
end

--- The usable read-only backend with the fewest clients (0 when there is none).
function idle_ro()
	local best, best_clients = 0, nil
	for i = 1, #proxy.global.backends do
		local b = proxy.global.backends[i]
		if b.type == proxy.BACKEND_TYPE_RO and b.state == proxy.BACKEND_STATE_UP then
			if best_clients == nil or b.connected_clients < best_clients then
				best, best_clients = i, b.connected_clients
			end
		end
	end
	return best
end

-- proxy.test: the unit-test helpers of mysql-proxy scripts (BaseTest, ProxyBaseTest, Suite,
-- assertEquals), small enough to read.
module("proxy.test", package.seeall)

function assertEquals(is, expected, msg)
	if is ~= expected then
		error(string.format("%sexpected %s, got %s", msg and (msg .. ": ") or "",
			tostring(expected), tostring(is)), 2)
	end
end

BaseTest = { }
BaseTest.__index = BaseTest

function BaseTest:new(o)
	o = o or {}
	setmetatable(o, self)
	self.__index = self
	return o
end

function BaseTest:setUp() end
function BaseTest:tearDown() end

ProxyBaseTest = BaseTest:new()

function ProxyBaseTest:setDefaultScope()
	proxy.global.config = {}
end

Suite = { }
Suite.__index = Suite

function Suite:new(o)
	o = o or {}
	o.failed, o.passed = 0, 0
	setmetatable(o, self)
	return o
end

--- Run every method whose name starts with "test" of every test class in the suite's table.
function Suite:run()
	for _, class in pairs(self.result or self) do
		if type(class) == "table" and class.setUp then
			for name, f in pairs(class) do
				if type(name) == "string" and name:sub(1, 4) == "test" and type(f) == "function" then
					class:setUp()
					local ok, e = pcall(f, class)
					class:tearDown()
					if ok then self.passed = self.passed + 1
					else
						self.failed = self.failed + 1
						print("FAIL " .. name .. ": " .. tostring(e))
					end
				end
			end
		end
	end
end

function Suite:exit_code()
	return self.failed == 0 and 0 or 1
end

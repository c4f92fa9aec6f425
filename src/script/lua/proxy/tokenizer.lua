-- proxy.tokenizer: mysql-proxy's helpers on the native mysql.tokenizer.
module("proxy.tokenizer", package.seeall)

local native = require("mysql.tokenizer")

tokenize = native.tokenize
tokens = native.tokens

local function is_comment(t)
	return t.token_name == "TK_COMMENT" or t.token_name == "TK_COMMENT_MYSQL"
end

local function quoted(t)
	if t.token_name == "TK_STRING" then
		return "'" .. t.text:gsub("\\", "\\\\"):gsub("'", "\\'") .. "'"
	end
	return t.text
end

--- The statement without comments, literals as ?, identifiers backquoted, keywords upper-case.
function normalize(toks)
	local out = {}
	for _, t in ipairs(toks) do
		local n = t.token_name
		if is_comment(t) then
			-- dropped
		elseif n == "TK_STRING" or n == "TK_INTEGER" or n == "TK_FLOAT" then
			out[#out + 1] = "?"
		elseif n == "TK_LITERAL" then
			out[#out + 1] = "`" .. t.text .. "`"
		elseif n == "TK_FUNCTION" or n:sub(1, 7) == "TK_SQL_" then
			out[#out + 1] = t.text:upper()
		else
			out[#out + 1] = t.text
		end
	end
	return table.concat(out, " ") .. " "
end

--- The first token that is not a comment.
function first_stmt_token(toks)
	for _, t in ipairs(toks) do
		if not is_comment(t) then
			return t
		end
	end
	return nil
end

--- The texts of the tokens without comments; strings quoted when asked.
function bare_tokens(toks, quote_strings)
	local out = {}
	for _, t in ipairs(toks) do
		if not is_comment(t) then
			out[#out + 1] = quote_strings and quoted(t) or t.text
		end
	end
	return out
end

--- The query text of tokens start..stop (strings quoted).
function tokens_to_query(toks, start, stop)
	local out = {}
	for i = start or 1, stop or #toks do
		out[#out + 1] = quoted(toks[i])
	end
	return table.concat(out, " ")
end

function tokens_without_comments(toks)
	local out = {}
	for _, t in ipairs(toks) do
		if not is_comment(t) then
			out[#out + 1] = t
		end
	end
	return out
end

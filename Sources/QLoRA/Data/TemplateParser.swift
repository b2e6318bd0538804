import Foundation

// Lexer and parser of the Jinja2 subset used by chat templates. Configured as transformers
// configures Jinja for apply_chat_template: trim_blocks and lstrip_blocks on, loop controls on.

/// 1-based line and column in the template.
struct TemplatePosition { var line: Int; var column: Int }

indirect enum TemplateExpression {
    case literal(TemplateValue)
    case name(String)
    case attribute(TemplateExpression, String)
    case index(TemplateExpression, TemplateExpression)
    case slice(TemplateExpression, TemplateExpression?, TemplateExpression?, TemplateExpression?)
    case call(TemplateExpression, [TemplateExpression], [(String, TemplateExpression)])
    case filter(TemplateExpression, String, [TemplateExpression], [(String, TemplateExpression)])
    case test(TemplateExpression, String, negated: Bool, [TemplateExpression])
    case unary(String, TemplateExpression)
    case binary(String, TemplateExpression, TemplateExpression)
    case conditional(then: TemplateExpression, condition: TemplateExpression, otherwise: TemplateExpression?)
    case list([TemplateExpression])
    case dictionary([(TemplateExpression, TemplateExpression)])
}

indirect enum TemplateNode {
    case text(String)
    case output(TemplateExpression, TemplatePosition)
    case conditional([(TemplateExpression, [TemplateNode])], otherwise: [TemplateNode], TemplatePosition)
    case loop(targets: [String], iterable: TemplateExpression, filter: TemplateExpression?,
              body: [TemplateNode], otherwise: [TemplateNode], TemplatePosition)
    case assign(name: String, attribute: String?, TemplateExpression, TemplatePosition)
    case loopBreak, loopContinue
}

private struct TemplateToken {
    enum Kind: Equatable { case name, string, integer, float, symbol, end }
    var kind: Kind
    var text: String
    var position: TemplatePosition
}

/// One `{{ }}` or `{% %}` tag's tokens, or a text run.
private enum TemplateItem {
    case text(String)
    case output([TemplateToken], TemplatePosition)
    case statement([TemplateToken], TemplatePosition)
}

enum TemplateParser {
    static func parse(_ source: String) throws -> [TemplateNode] {
        let items = try lex(Array(source.unicodeScalars))
        var cursor = 0
        let (nodes, terminator) = try parseBlock(items, &cursor, until: [])
        if let terminator {
            throw DataError.templateSyntax(message: "unexpected {% \(terminator.0) %}", line: terminator.1.line, column: terminator.1.column)
        }
        return nodes
    }

    // MARK: Lexing

    private static func lex(_ s: [Unicode.Scalar]) throws -> [TemplateItem] {
        var items: [TemplateItem] = []
        var i = 0
        var line = 1, lineStart = 0
        let n = s.count
        func position(_ index: Int) -> TemplatePosition {
            // Lines are counted incrementally; `index` is never before the last counted newline.
            TemplatePosition(line: line, column: index - lineStart + 1)
        }
        func advanceLines(to end: Int, from start: Int) {
            for k in start..<end where s[k] == "\n" { line += 1; lineStart = k + 1 }
        }
        var text = String.UnicodeScalarView()
        var textStartsLine = true   // the current text run begins at a line start
        var stripNextLeading = false
        func flushText() {
            if stripNextLeading {
                while let first = text.first, first.properties.isWhitespace { text.removeFirst() }
            }
            if !text.isEmpty { items.append(.text(String(text))) }
            text = String.UnicodeScalarView()
        }
        while i < n {
            guard s[i] == "{", i + 1 < n, s[i + 1] == "{" || s[i + 1] == "%" || s[i + 1] == "#" else {
                if text.isEmpty && stripNextLeading && s[i].properties.isWhitespace {
                    if s[i] == "\n" { line += 1; lineStart = i + 1 }
                    i += 1
                    continue
                }
                stripNextLeading = stripNextLeading && text.isEmpty
                text.append(s[i])
                if s[i] == "\n" { line += 1; lineStart = i + 1 }
                i += 1
                continue
            }
            let kind = s[i + 1]
            let tagPosition = position(i)
            var j = i + 2
            var trimLeft = false, keepLeft = false
            if j < n && s[j] == "-" { trimLeft = true; j += 1 } else if j < n && s[j] == "+" { keepLeft = true; j += 1 }
            // Whitespace control on the text before the tag.
            if trimLeft {
                while let last = text.last, last.properties.isWhitespace { text.removeLast() }
            } else if kind != "{" && !keepLeft {
                // lstrip_blocks: spaces and tabs from the line start up to a block tag.
                var k = text.endIndex
                var onlyBlanks = true
                while k > text.startIndex {
                    let previous = text.index(before: k)
                    if text[previous] == "\n" { break }
                    if text[previous] != " " && text[previous] != "\t" { onlyBlanks = false; break }
                    k = previous
                }
                if onlyBlanks && (k > text.startIndex || textStartsLine) { text.removeSubrange(k...) }
            }
            flushText()
            stripNextLeading = false
            var trimRight = false
            if kind == "#" {
                var k = j
                while k + 1 < n && !(s[k] == "#" && s[k + 1] == "}") { k += 1 }
                guard k + 1 < n else {
                    throw DataError.templateSyntax(message: "unclosed comment", line: tagPosition.line, column: tagPosition.column)
                }
                trimRight = k > j && s[k - 1] == "-"
                advanceLines(to: k + 2, from: i)
                i = k + 2
            } else {
                var tokens: [TemplateToken] = []
                let closer: Unicode.Scalar = kind == "{" ? "}" : "%"
                var closed = false
                while j < n {
                    let c = s[j]
                    if c == "\n" { line += 1; lineStart = j + 1; j += 1; continue }
                    if c == " " || c == "\t" || c == "\r" { j += 1; continue }
                    if c == "-" && j + 2 < n && s[j + 1] == closer && s[j + 2] == "}" { trimRight = true; j += 3; closed = true; break }
                    if c == closer && j + 1 < n && s[j + 1] == "}" { j += 2; closed = true; break }
                    let start = position(j)
                    if c == "'" || c == "\"" {
                        var value = String.UnicodeScalarView()
                        var k = j + 1
                        while k < n && s[k] != c {
                            if s[k] == "\\" && k + 1 < n {
                                k += 1
                                switch s[k] {
                                case "n": value.append("\n")
                                case "t": value.append("\t")
                                case "r": value.append("\r")
                                case "\\": value.append("\\")
                                case "'": value.append("'")
                                case "\"": value.append("\"")
                                case "0": value.append("\0")
                                default: value.append("\\"); value.append(s[k])
                                }
                            } else {
                                if s[k] == "\n" { line += 1; lineStart = k + 1 }
                                value.append(s[k])
                            }
                            k += 1
                        }
                        guard k < n else { throw DataError.templateSyntax(message: "unclosed string", line: start.line, column: start.column) }
                        tokens.append(TemplateToken(kind: .string, text: String(value), position: start))
                        j = k + 1
                    } else if c.properties.numericType != nil && c.isASCII {
                        var k = j
                        while k < n && s[k].isASCII && s[k].properties.numericType != nil { k += 1 }
                        var kindOfNumber = TemplateToken.Kind.integer
                        if k + 1 < n && s[k] == "." && s[k + 1].isASCII && s[k + 1].properties.numericType != nil {
                            kindOfNumber = .float
                            k += 1
                            while k < n && s[k].isASCII && s[k].properties.numericType != nil { k += 1 }
                        }
                        tokens.append(TemplateToken(kind: kindOfNumber, text: String(String.UnicodeScalarView(s[j..<k])), position: start))
                        j = k
                    } else if c == "_" || (c.isASCII && c.properties.isAlphabetic) {
                        var k = j
                        while k < n && (s[k] == "_" || (s[k].isASCII && (s[k].properties.isAlphabetic || s[k].properties.numericType != nil))) { k += 1 }
                        tokens.append(TemplateToken(kind: .name, text: String(String.UnicodeScalarView(s[j..<k])), position: start))
                        j = k
                    } else {
                        let two = j + 1 < n ? String(String.UnicodeScalarView([c, s[j + 1]])) : ""
                        if ["==", "!=", "<=", ">=", "//", "**"].contains(two) {
                            tokens.append(TemplateToken(kind: .symbol, text: two, position: start))
                            j += 2
                        } else if "+-*/%~|.,:()[]{}=<>".unicodeScalars.contains(c) {
                            tokens.append(TemplateToken(kind: .symbol, text: String(c), position: start))
                            j += 1
                        } else {
                            throw DataError.templateSyntax(message: "unexpected character \(c.escaped(asASCII: false))", line: start.line, column: start.column)
                        }
                    }
                }
                guard closed else {
                    throw DataError.templateSyntax(message: "unclosed tag", line: tagPosition.line, column: tagPosition.column)
                }
                tokens.append(TemplateToken(kind: .end, text: "", position: position(j)))
                items.append(kind == "{" ? .output(tokens, tagPosition) : .statement(tokens, tagPosition))
                i = j
            }
            if trimRight {
                stripNextLeading = true
            } else if kind != "{" {
                // trim_blocks: drop one newline right after a block tag or comment.
                if i < n && s[i] == "\n" { line += 1; lineStart = i + 1; i += 1 }
                else if i + 1 < n && s[i] == "\r" && s[i + 1] == "\n" { line += 1; lineStart = i + 2; i += 2 }
            }
            textStartsLine = i == 0 || s[i - 1] == "\n"
        }
        flushText()
        return items
    }

    // MARK: Statements

    private static let unsupportedStatements: Set<String> = [
        "macro", "call", "filter", "include", "import", "from", "extends", "block", "raw", "with", "autoescape", "do",
    ]

    /// Parses nodes until one of `terminators` (returned with its position and the tag's tokens).
    private static func parseBlock(_ items: [TemplateItem], _ cursor: inout Int, until terminators: Set<String>) throws
        -> ([TemplateNode], (String, TemplatePosition, [TemplateToken])?) {
        var nodes: [TemplateNode] = []
        while cursor < items.count {
            let item = items[cursor]
            cursor += 1
            switch item {
            case .text(let text):
                nodes.append(.text(text))
            case .output(let tokens, let position):
                var parser = ExpressionParser(tokens: tokens)
                let expression = try parser.parseExpression()
                try parser.expectEnd()
                nodes.append(.output(expression, position))
            case .statement(let tokens, let position):
                guard let keyword = tokens.first, keyword.kind == .name else {
                    throw DataError.templateSyntax(message: "expected a statement name", line: position.line, column: position.column)
                }
                if terminators.contains(keyword.text) {
                    return (nodes, (keyword.text, position, tokens))
                }
                var parser = ExpressionParser(tokens: tokens)
                parser.index = 1
                switch keyword.text {
                case "if":
                    var branches: [(TemplateExpression, [TemplateNode])] = []
                    var condition = try parser.parseExpression()
                    try parser.expectEnd()
                    var otherwise: [TemplateNode] = []
                    while true {
                        let (body, end) = try parseBlock(items, &cursor, until: ["elif", "else", "endif"])
                        guard let end else {
                            throw DataError.templateSyntax(message: "{% if %} without {% endif %}", line: position.line, column: position.column)
                        }
                        branches.append((condition, body))
                        if end.0 == "elif" {
                            var next = ExpressionParser(tokens: end.2)
                            next.index = 1
                            condition = try next.parseExpression()
                            try next.expectEnd()
                            continue
                        }
                        if end.0 == "else" {
                            let (elseBody, final) = try parseBlock(items, &cursor, until: ["endif"])
                            guard final != nil else {
                                throw DataError.templateSyntax(message: "{% else %} without {% endif %}", line: end.1.line, column: end.1.column)
                            }
                            otherwise = elseBody
                        }
                        break
                    }
                    nodes.append(.conditional(branches, otherwise: otherwise, position))
                case "for":
                    var targets = [try parser.expectName()]
                    while parser.peekSymbol(",") { parser.index += 1; targets.append(try parser.expectName()) }
                    try parser.expectKeyword("in")
                    let iterable = try parser.parseOr(allowConditional: false)
                    var filter: TemplateExpression? = nil
                    if parser.peekKeyword("if") { parser.index += 1; filter = try parser.parseOr(allowConditional: false) }
                    if parser.peekKeyword("recursive") {
                        throw DataError.templateUnsupported(construct: "recursive loops", line: position.line, column: position.column)
                    }
                    try parser.expectEnd()
                    let (body, end) = try parseBlock(items, &cursor, until: ["else", "endfor"])
                    guard let end else {
                        throw DataError.templateSyntax(message: "{% for %} without {% endfor %}", line: position.line, column: position.column)
                    }
                    var otherwise: [TemplateNode] = []
                    if end.0 == "else" {
                        let (elseBody, final) = try parseBlock(items, &cursor, until: ["endfor"])
                        guard final != nil else {
                            throw DataError.templateSyntax(message: "{% else %} without {% endfor %}", line: end.1.line, column: end.1.column)
                        }
                        otherwise = elseBody
                    }
                    nodes.append(.loop(targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise, position))
                case "set":
                    let name = try parser.expectName()
                    var attribute: String? = nil
                    if parser.peekSymbol(".") { parser.index += 1; attribute = try parser.expectName() }
                    guard parser.peekSymbol("=") else {
                        throw DataError.templateUnsupported(construct: "{% set %} blocks or tuple assignment", line: position.line, column: position.column)
                    }
                    parser.index += 1
                    let value = try parser.parseExpression()
                    try parser.expectEnd()
                    nodes.append(.assign(name: name, attribute: attribute, value, position))
                case "break": try parser.expectEnd(); nodes.append(.loopBreak)
                case "continue": try parser.expectEnd(); nodes.append(.loopContinue)
                case "generation":
                    // transformers' AssistantTracker block: rendered as its content.
                    let (body, end) = try parseBlock(items, &cursor, until: ["endgeneration"])
                    guard end != nil else {
                        throw DataError.templateSyntax(message: "{% generation %} without {% endgeneration %}", line: position.line, column: position.column)
                    }
                    nodes.append(contentsOf: body)
                default:
                    if unsupportedStatements.contains(keyword.text) {
                        throw DataError.templateUnsupported(construct: "{% \(keyword.text) %}", line: position.line, column: position.column)
                    }
                    throw DataError.templateSyntax(message: "unknown statement \(keyword.text)", line: position.line, column: position.column)
                }
            }
        }
        return (nodes, nil)
    }

    // MARK: Expressions

    private struct ExpressionParser {
        let tokens: [TemplateToken]
        var index = 0

        init(tokens: [TemplateToken]) { self.tokens = tokens }

        var current: TemplateToken { tokens[min(index, tokens.count - 1)] }

        func error(_ message: String) -> DataError {
            .templateSyntax(message: message, line: current.position.line, column: current.position.column)
        }

        func peekSymbol(_ symbol: String) -> Bool { current.kind == .symbol && current.text == symbol }
        func peekKeyword(_ keyword: String) -> Bool { current.kind == .name && current.text == keyword }

        mutating func expectSymbol(_ symbol: String) throws {
            guard peekSymbol(symbol) else { throw error("expected '\(symbol)'" + (current.kind == .end ? " before the end of the tag" : ", found '\(current.text)'")) }
            index += 1
        }

        mutating func expectKeyword(_ keyword: String) throws {
            guard peekKeyword(keyword) else { throw error("expected '\(keyword)'") }
            index += 1
        }

        mutating func expectName() throws -> String {
            guard current.kind == .name else { throw error("expected a name") }
            index += 1
            return tokens[index - 1].text
        }

        func expectEnd() throws {
            guard current.kind == .end else { throw error("unexpected '\(current.text)'") }
        }

        mutating func parseExpression() throws -> TemplateExpression { try parseOr(allowConditional: true) }

        mutating func parseOr(allowConditional: Bool) throws -> TemplateExpression {
            var left = try parseAnd()
            while peekKeyword("or") { index += 1; left = .binary("or", left, try parseAnd()) }
            if allowConditional && peekKeyword("if") {
                index += 1
                let condition = try parseOr(allowConditional: false)
                var otherwise: TemplateExpression? = nil
                if peekKeyword("else") { index += 1; otherwise = try parseOr(allowConditional: true) }
                return .conditional(then: left, condition: condition, otherwise: otherwise)
            }
            return left
        }

        mutating func parseAnd() throws -> TemplateExpression {
            var left = try parseNot()
            while peekKeyword("and") { index += 1; left = .binary("and", left, try parseNot()) }
            return left
        }

        mutating func parseNot() throws -> TemplateExpression {
            if peekKeyword("not") { index += 1; return .unary("not", try parseNot()) }
            return try parseCompare()
        }

        mutating func parseCompare() throws -> TemplateExpression {
            var left = try parseAdditive()
            while true {
                if current.kind == .symbol, ["==", "!=", "<", ">", "<=", ">="].contains(current.text) {
                    let op = current.text
                    index += 1
                    left = .binary(op, left, try parseAdditive())
                } else if peekKeyword("in") {
                    index += 1
                    left = .binary("in", left, try parseAdditive())
                } else if peekKeyword("not"), index + 1 < tokens.count, tokens[index + 1].kind == .name, tokens[index + 1].text == "in" {
                    index += 2
                    left = .binary("not in", left, try parseAdditive())
                } else {
                    return left
                }
            }
        }

        mutating func parseAdditive() throws -> TemplateExpression {
            var left = try parseConcat()
            while peekSymbol("+") || peekSymbol("-") {
                let op = current.text
                index += 1
                left = .binary(op, left, try parseConcat())
            }
            return left
        }

        mutating func parseConcat() throws -> TemplateExpression {
            var left = try parseMultiplicative()
            while peekSymbol("~") { index += 1; left = .binary("~", left, try parseMultiplicative()) }
            return left
        }

        mutating func parseMultiplicative() throws -> TemplateExpression {
            var left = try parsePower()
            while current.kind == .symbol, ["*", "/", "//", "%"].contains(current.text) {
                let op = current.text
                index += 1
                left = .binary(op, left, try parsePower())
            }
            return left
        }

        mutating func parsePower() throws -> TemplateExpression {
            var left = try parseUnary()
            while peekSymbol("**") { index += 1; left = .binary("**", left, try parseUnary()) }
            return left
        }

        mutating func parseUnary() throws -> TemplateExpression {
            if peekSymbol("-") { index += 1; return try parseFilters(.unary("-", try parseUnary())) }
            if peekSymbol("+") { index += 1; return try parseUnary() }
            return try parseFilters(try parsePostfix(try parsePrimary()))
        }

        mutating func parseArguments() throws -> ([TemplateExpression], [(String, TemplateExpression)]) {
            try expectSymbol("(")
            var arguments: [TemplateExpression] = []
            var keywords: [(String, TemplateExpression)] = []
            while !peekSymbol(")") {
                if current.kind == .name, index + 1 < tokens.count, tokens[index + 1].kind == .symbol, tokens[index + 1].text == "=" {
                    let name = current.text
                    index += 2
                    keywords.append((name, try parseExpression()))
                } else {
                    arguments.append(try parseExpression())
                }
                if !peekSymbol(")") { try expectSymbol(",") }
            }
            index += 1
            return (arguments, keywords)
        }

        mutating func parseFilters(_ base: TemplateExpression) throws -> TemplateExpression {
            var expression = base
            while true {
                if peekSymbol("|") {
                    index += 1
                    let name = try expectName()
                    var arguments: [TemplateExpression] = [], keywords: [(String, TemplateExpression)] = []
                    if peekSymbol("(") { (arguments, keywords) = try parseArguments() }
                    expression = .filter(expression, name, arguments, keywords)
                } else if peekKeyword("is") {
                    index += 1
                    var negated = false
                    if peekKeyword("not") { negated = true; index += 1 }
                    let name = try expectName()
                    var arguments: [TemplateExpression] = []
                    if peekSymbol("(") {
                        arguments = try parseArguments().0
                    } else if current.kind == .string || current.kind == .integer || current.kind == .float {
                        arguments = [try parsePrimary()]
                    }
                    expression = .test(expression, name, negated: negated, arguments)
                } else {
                    return expression
                }
            }
        }

        mutating func parsePostfix(_ base: TemplateExpression) throws -> TemplateExpression {
            var expression = base
            while true {
                if peekSymbol(".") {
                    index += 1
                    if current.kind == .integer {
                        expression = .index(expression, .literal(.int(Int(current.text) ?? 0)))
                        index += 1
                    } else {
                        expression = .attribute(expression, try expectName())
                    }
                } else if peekSymbol("[") {
                    index += 1
                    var parts: [TemplateExpression?] = [nil]
                    var sawColon = false
                    while !peekSymbol("]") {
                        if peekSymbol(":") {
                            sawColon = true
                            parts.append(nil)
                            index += 1
                        } else {
                            parts[parts.count - 1] = try parseExpression()
                        }
                    }
                    index += 1
                    if sawColon {
                        guard parts.count <= 3 else { throw error("too many ':' in a slice") }
                        expression = .slice(expression, parts[0], parts.count > 1 ? parts[1] : nil, parts.count > 2 ? parts[2] : nil)
                    } else {
                        guard let key = parts[0] else { throw error("empty subscript") }
                        expression = .index(expression, key)
                    }
                } else if peekSymbol("(") {
                    let (arguments, keywords) = try parseArguments()
                    expression = .call(expression, arguments, keywords)
                } else {
                    return expression
                }
            }
        }

        mutating func parsePrimary() throws -> TemplateExpression {
            let token = current
            switch token.kind {
            case .string:
                index += 1
                var value = token.text
                while current.kind == .string { value += current.text; index += 1 }  // adjacent literals
                return .literal(.string(value))
            case .integer:
                index += 1
                return .literal(.int(Int(token.text) ?? 0))
            case .float:
                index += 1
                return .literal(.double(Double(token.text) ?? 0))
            case .name:
                index += 1
                switch token.text {
                case "true", "True": return .literal(.bool(true))
                case "false", "False": return .literal(.bool(false))
                case "none", "None": return .literal(.none)
                default: return .name(token.text)
                }
            case .symbol where token.text == "(":
                index += 1
                let inner = try parseExpression()
                if peekSymbol(",") {
                    var items = [inner]
                    while peekSymbol(",") {
                        index += 1
                        if peekSymbol(")") { break }
                        items.append(try parseExpression())
                    }
                    try expectSymbol(")")
                    return .list(items)
                }
                try expectSymbol(")")
                return inner
            case .symbol where token.text == "[":
                index += 1
                var items: [TemplateExpression] = []
                while !peekSymbol("]") {
                    items.append(try parseExpression())
                    if !peekSymbol("]") { try expectSymbol(",") }
                }
                index += 1
                return .list(items)
            case .symbol where token.text == "{":
                index += 1
                var pairs: [(TemplateExpression, TemplateExpression)] = []
                while !peekSymbol("}") {
                    let key = try parseExpression()
                    try expectSymbol(":")
                    pairs.append((key, try parseExpression()))
                    if !peekSymbol("}") { try expectSymbol(",") }
                }
                index += 1
                return .dictionary(pairs)
            case .end:
                throw error("unexpected end of tag")
            default:
                throw error("unexpected '\(token.text)'")
            }
        }
    }
}

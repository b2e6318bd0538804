import Foundation

/// One chat message.
public struct ChatMessage: Sendable, Equatable, Codable {
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// A chat template (the `chat_template` of tokenizer_config.json or chat_template.jinja) rendered by a
/// small Jinja2 interpreter, configured like transformers' `apply_chat_template` (trim_blocks,
/// lstrip_blocks, loop controls).
///
/// Supported: `{{ }}`, `{% if/elif/else/endif %}`, `{% for a[, b] in xs [if cond] %}...{% else %}` with
/// `loop.index/index0/revindex/revindex0/first/last/length/previtem/nextitem`, `{% set x = ... %}` and
/// `{% set ns.x = ... %}` with `namespace(...)`, `{% break/continue %}`, `{% generation %}`, comments,
/// whitespace control (`-`, `+`), literals (strings with escapes, numbers, lists, dicts, tuples),
/// `+ - * / // % ** ~`, comparisons, `and/or/not`, `in`/`not in`, `x if c else y`, attributes,
/// subscripts and slices, tests (`is defined`, `none`, `string`, `number`, `mapping`, `sequence`, ...),
/// filters (trim, length, count, tojson, upper, lower, title, capitalize, default, first, last, join,
/// string, int, float, list, replace, reverse, items, selectattr, rejectattr, map(attribute=), safe),
/// string methods (strip, lstrip, rstrip, startswith, endswith, upper, lower, split, replace, title),
/// dict methods (items, keys, values, get), `raise_exception`, `range`.
/// Not supported (throws `DataError.templateUnsupported` at parse time): macros, call blocks, filter
/// blocks, include/import/extends, block `set`, recursive loops.
public final class ChatTemplate: @unchecked Sendable {
    public let source: String
    private let nodes: [TemplateNode]

    public init(_ source: String) throws {
        self.source = source
        nodes = try TemplateParser.parse(source)
    }

    /// Renders `messages`; `bos_token` / `eos_token` default to "" when nil; `extraContext` adds variables.
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String? = nil,
                       eosToken: String? = nil, extraContext: [String: TemplateValue] = [:]) throws -> String {
        var context: [String: TemplateValue] = [
            "messages": .array(messages.map { .object([("role", .string($0.role)), ("content", .string($0.content))]) }),
            "add_generation_prompt": .bool(addGenerationPrompt),
            "bos_token": .string(bosToken ?? ""),
            "eos_token": .string(eosToken ?? ""),
            "raise_exception": .function("raise_exception"),
            "namespace": .function("namespace"),
            "range": .function("range"),
        ]
        for (key, value) in extraContext { context[key] = value }
        var renderer = TemplateRenderer(scopes: [context])
        var output = ""
        _ = try renderer.render(nodes, into: &output)
        return output
    }

    /// Renders with the tokenizer's BOS / EOS token strings.
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool, tokenizer: Tokenizer) throws -> String {
        try render(messages: messages, addGenerationPrompt: addGenerationPrompt, bosToken: tokenizer.bosToken, eosToken: tokenizer.eosToken)
    }
}

private struct TemplateRenderer {
    var scopes: [[String: TemplateValue]]
    var position = TemplatePosition(line: 1, column: 1)

    enum Flow { case normal, breakLoop, continueLoop }

    func failure(_ message: String) -> DataError {
        .templateRuntime(message: message, line: position.line, column: position.column)
    }

    func lookup(_ name: String) -> TemplateValue {
        for scope in scopes.reversed() { if let value = scope[name] { return value } }
        return .undefined
    }

    mutating func render(_ nodes: [TemplateNode], into output: inout String) throws -> Flow {
        for node in nodes {
            switch node {
            case .text(let text):
                output += text
            case .output(let expression, let where_):
                position = where_
                output += try evaluate(expression).description
            case .conditional(let branches, let otherwise, let where_):
                position = where_
                var chosen: [TemplateNode]? = nil
                for (condition, body) in branches where try evaluate(condition).isTruthy {
                    chosen = body
                    break
                }
                let flow = try render(chosen ?? otherwise, into: &output)
                if flow != .normal { return flow }
            case .loop(let targets, let iterable, let filter, let body, let otherwise, let where_):
                position = where_
                var items = try iterate(try evaluate(iterable))
                if let filter {
                    items = try items.filter { item in
                        scopes.append(try bind(targets, item))
                        defer { scopes.removeLast() }
                        return try evaluate(filter).isTruthy
                    }
                }
                if items.isEmpty { _ = try render(otherwise, into: &output); continue }
                for (index, item) in items.enumerated() {
                    var scope = try bind(targets, item)
                    scope["loop"] = .object([
                        ("index", .int(index + 1)), ("index0", .int(index)),
                        ("revindex", .int(items.count - index)), ("revindex0", .int(items.count - index - 1)),
                        ("first", .bool(index == 0)), ("last", .bool(index == items.count - 1)),
                        ("length", .int(items.count)),
                        ("previtem", index > 0 ? items[index - 1] : .undefined),
                        ("nextitem", index + 1 < items.count ? items[index + 1] : .undefined),
                    ])
                    scopes.append(scope)
                    let flow = try render(body, into: &output)
                    scopes.removeLast()
                    if flow == .breakLoop { break }
                }
            case .assign(let name, let attribute, let expression, let where_):
                position = where_
                let value = try evaluate(expression)
                if let attribute {
                    guard case .namespace(let space) = lookup(name) else {
                        throw failure("cannot set \(name).\(attribute): \(name) is not a namespace")
                    }
                    space.set(attribute, value)
                } else {
                    scopes[scopes.count - 1][name] = value
                }
            case .loopBreak: return .breakLoop
            case .loopContinue: return .continueLoop
            }
        }
        return .normal
    }

    func bind(_ targets: [String], _ item: TemplateValue) throws -> [String: TemplateValue] {
        if targets.count == 1 { return [targets[0]: item] }
        guard case .array(let parts) = item, parts.count == targets.count else {
            throw failure("cannot unpack \(item.pythonRepr) into \(targets.count) names")
        }
        return Dictionary(uniqueKeysWithValues: zip(targets, parts))
    }

    func iterate(_ value: TemplateValue) throws -> [TemplateValue] {
        switch value {
        case .array(let items): return items
        case .object(let pairs): return pairs.map { .string($0.0) }
        case .string(let text): return text.map { .string(String($0)) }
        case .undefined, .none: return []
        default: throw failure("\(value.pythonRepr) is not iterable")
        }
    }

    // MARK: Expressions

    mutating func evaluate(_ expression: TemplateExpression) throws -> TemplateValue {
        switch expression {
        case .literal(let value): return value
        case .name(let name): return lookup(name)
        case .attribute(let base, let name):
            return try evaluate(base).member(name)
        case .index(let base, let key):
            return try subscriptValue(try evaluate(base), try evaluate(key))
        case .slice(let base, let start, let stop, let step):
            return try sliceValue(try evaluate(base), try start.map { try evaluate($0) }, try stop.map { try evaluate($0) },
                                  try step.map { try evaluate($0) })
        case .call(let callee, let arguments, let keywords):
            let values = try arguments.map { try evaluate($0) }
            let named = try keywords.map { ($0.0, try evaluate($0.1)) }
            if case .attribute(let base, let name) = callee {
                let receiver = try evaluate(base)
                if case .function(let function) = receiver.member(name) {
                    return try callFunction(function, values, named)
                }
                return try callMethod(receiver, name, values)
            }
            guard case .function(let function) = try evaluate(callee) else {
                throw failure("\(describe(callee)) is not callable")
            }
            return try callFunction(function, values, named)
        case .filter(let base, let name, let arguments, let keywords):
            let value = try evaluate(base)
            return try applyFilter(name, value, try arguments.map { try evaluate($0) }, try keywords.map { ($0.0, try evaluate($0.1)) })
        case .test(let base, let name, let negated, let arguments):
            let result = try applyTest(name, try evaluate(base), try arguments.map { try evaluate($0) })
            return .bool(result != negated)
        case .unary(let op, let operand):
            let value = try evaluate(operand)
            if op == "not" { return .bool(!value.isTruthy) }
            switch value {
            case .int(let number): return .int(-number)
            case .double(let number): return .double(-number)
            default: throw failure("cannot negate \(value.pythonRepr)")
            }
        case .binary(let op, let leftExpression, let rightExpression):
            let left = try evaluate(leftExpression)
            if op == "and" { return left.isTruthy ? try evaluate(rightExpression) : left }
            if op == "or" { return left.isTruthy ? left : try evaluate(rightExpression) }
            return try binary(op, left, try evaluate(rightExpression))
        case .conditional(let then, let condition, let otherwise):
            if try evaluate(condition).isTruthy { return try evaluate(then) }
            return try otherwise.map { try evaluate($0) } ?? .undefined
        case .list(let items):
            return .array(try items.map { try evaluate($0) })
        case .dictionary(let pairs):
            return .object(try pairs.map { pair in
                guard case .string(let key) = try evaluate(pair.0) else { throw failure("dictionary keys must be strings") }
                return (key, try evaluate(pair.1))
            })
        }
    }

    func describe(_ expression: TemplateExpression) -> String {
        if case .name(let name) = expression { return name }
        return "expression"
    }

    func subscriptValue(_ base: TemplateValue, _ key: TemplateValue) throws -> TemplateValue {
        switch (base, key) {
        case (.array(let items), .int(let index)):
            let resolved = index < 0 ? items.count + index : index
            return items.indices.contains(resolved) ? items[resolved] : .undefined
        case (.string(let text), .int(let index)):
            let characters = Array(text)
            let resolved = index < 0 ? characters.count + index : index
            return characters.indices.contains(resolved) ? .string(String(characters[resolved])) : .undefined
        case (_, .string(let name)):
            return base.member(name)
        case (.undefined, _), (.none, _):
            return .undefined
        default:
            throw failure("cannot index \(base.pythonRepr) with \(key.pythonRepr)")
        }
    }

    func sliceValue(_ base: TemplateValue, _ start: TemplateValue?, _ stop: TemplateValue?, _ step: TemplateValue?) throws -> TemplateValue {
        func integer(_ value: TemplateValue?) throws -> Int? {
            switch value {
            case nil, .none?, .undefined?: return nil
            case .int(let number)?: return number
            default: throw failure("slice bounds must be integers")
            }
        }
        let stride = try integer(step) ?? 1
        guard stride != 0 else { throw failure("slice step cannot be zero") }
        func indices(_ count: Int) throws -> [Int] {
            func clamp(_ value: Int?, _ defaultValue: Int) -> Int {
                guard var value else { return defaultValue }
                if value < 0 { value += count }
                return stride > 0 ? min(max(value, 0), count) : min(max(value, -1), count - 1)
            }
            let first = clamp(try integer(start), stride > 0 ? 0 : count - 1)
            let last = clamp(try integer(stop), stride > 0 ? count : -1)
            return Array(Swift.stride(from: first, to: last, by: stride))
        }
        switch base {
        case .array(let items): return .array(try indices(items.count).map { items[$0] })
        case .string(let text):
            let characters = Array(text)
            return .string(String(try indices(characters.count).map { characters[$0] }))
        default: throw failure("cannot slice \(base.pythonRepr)")
        }
    }

    func binary(_ op: String, _ left: TemplateValue, _ right: TemplateValue) throws -> TemplateValue {
        switch op {
        case "==": return .bool(left == right)
        case "!=": return .bool(left != right)
        case "~": return .string(left.description + right.description)
        case "in", "not in":
            let contained: Bool
            switch right {
            case .string(let text):
                guard case .string(let needle) = left else { throw failure("'in <string>' requires a string") }
                contained = needle.isEmpty || text.contains(needle)
            case .array(let items): contained = items.contains(left)
            case .object(let pairs):
                guard case .string(let key) = left else { contained = false; break }
                contained = pairs.contains { $0.0 == key }
            case .namespace(let space):
                guard case .string(let key) = left else { contained = false; break }
                contained = space.values.contains { $0.0 == key }
            case .undefined, .none: contained = false
            default: throw failure("argument of type \(right.pythonRepr) is not iterable")
            }
            return .bool(op == "in" ? contained : !contained)
        default: break
        }
        switch (left, right) {
        case (.string(let a), .string(let b)):
            switch op {
            case "+": return .string(a + b)
            case "<": return .bool(a < b)
            case ">": return .bool(a > b)
            case "<=": return .bool(a <= b)
            case ">=": return .bool(a >= b)
            default: break
            }
        case (.array(let a), .array(let b)) where op == "+":
            return .array(a + b)
        case (.string(let text), .int(let count)) where op == "*":
            return .string(String(repeating: text, count: max(count, 0)))
        case (.int(let a), .int(let b)):
            switch op {
            case "+": return .int(a + b)
            case "-": return .int(a - b)
            case "*": return .int(a * b)
            case "/": guard b != 0 else { throw failure("division by zero") }; return .double(Double(a) / Double(b))
            case "//": guard b != 0 else { throw failure("division by zero") }; return .int(Int((Double(a) / Double(b)).rounded(.down)))
            case "%": guard b != 0 else { throw failure("modulo by zero") }; return .int(((a % b) + b) % b)
            case "**": return .int(Int(pow(Double(a), Double(b))))
            case "<": return .bool(a < b)
            case ">": return .bool(a > b)
            case "<=": return .bool(a <= b)
            case ">=": return .bool(a >= b)
            default: break
            }
        default: break
        }
        if let a = TemplateRenderer.number(left), let b = TemplateRenderer.number(right) {
            switch op {
            case "+": return .double(a + b)
            case "-": return .double(a - b)
            case "*": return .double(a * b)
            case "/": guard b != 0 else { throw failure("division by zero") }; return .double(a / b)
            case "//": guard b != 0 else { throw failure("division by zero") }; return .double((a / b).rounded(.down))
            case "%": guard b != 0 else { throw failure("modulo by zero") }; return .double(a - b * (a / b).rounded(.down))
            case "**": return .double(pow(a, b))
            case "<": return .bool(a < b)
            case ">": return .bool(a > b)
            case "<=": return .bool(a <= b)
            case ">=": return .bool(a >= b)
            default: break
            }
        }
        throw failure("unsupported operand types for \(op): \(left.pythonRepr) and \(right.pythonRepr)")
    }

    static func number(_ value: TemplateValue) -> Double? {
        switch value {
        case .int(let number): return Double(number)
        case .double(let number): return number
        case .bool(let flag): return flag ? 1 : 0
        default: return nil
        }
    }

    func callFunction(_ name: String, _ arguments: [TemplateValue], _ keywords: [(String, TemplateValue)]) throws -> TemplateValue {
        switch name {
        case "raise_exception":
            throw DataError.templateRaisedException(message: arguments.first?.description ?? "")
        case "namespace":
            var values: [(String, TemplateValue)] = []
            if case .object(let pairs)? = arguments.first { values = pairs }
            for (key, value) in keywords {
                if let index = values.firstIndex(where: { $0.0 == key }) { values[index].1 = value } else { values.append((key, value)) }
            }
            return .namespace(TemplateNamespace(values))
        case "range":
            let bounds = try arguments.map { value -> Int in
                guard case .int(let number) = value else { throw failure("range() takes integers") }
                return number
            }
            switch bounds.count {
            case 1: return .array((0..<max(bounds[0], 0)).map { .int($0) })
            case 2: return .array(bounds[0] < bounds[1] ? (bounds[0]..<bounds[1]).map { .int($0) } : [])
            case 3 where bounds[2] != 0: return .array(Array(stride(from: bounds[0], to: bounds[1], by: bounds[2])).map { .int($0) })
            default: throw failure("range() takes 1 to 3 integer arguments")
            }
        default:
            throw failure("unknown function \(name)")
        }
    }

    func callMethod(_ receiver: TemplateValue, _ name: String, _ arguments: [TemplateValue]) throws -> TemplateValue {
        func stringArgument(_ index: Int) -> String? {
            if arguments.count > index, case .string(let text) = arguments[index] { return text }
            return nil
        }
        switch receiver {
        case .string(let text):
            switch name {
            case "strip", "lstrip", "rstrip":
                let characters = stringArgument(0).map { Set($0.unicodeScalars) }
                func strip(_ scalar: Unicode.Scalar) -> Bool { characters?.contains(scalar) ?? scalar.properties.isWhitespace }
                var scalars = Array(text.unicodeScalars)[...]
                if name != "rstrip" { while let first = scalars.first, strip(first) { scalars = scalars.dropFirst() } }
                if name != "lstrip" { while let last = scalars.last, strip(last) { scalars = scalars.dropLast() } }
                return .string(String(String.UnicodeScalarView(scalars)))
            case "startswith": return .bool(stringArgument(0).map { text.unicodeScalars.starts(with: $0.unicodeScalars) } ?? false)
            case "endswith": return .bool(stringArgument(0).map { text.unicodeScalars.reversed().starts(with: $0.unicodeScalars.reversed()) } ?? false)
            case "upper": return .string(text.uppercased())
            case "lower": return .string(text.lowercased())
            case "title", "capitalize": return try applyFilter(name, receiver, [], [])
            case "replace":
                guard let old = stringArgument(0), let new = stringArgument(1) else { throw failure("replace() takes two strings") }
                return .string(text.replacingOccurrences(of: old, with: new))
            case "split":
                if let separator = stringArgument(0) {
                    return .array(text.components(separatedBy: separator).map { .string($0) })
                }
                return .array(text.split(whereSeparator: { $0.isWhitespace }).map { .string(String($0)) })
            case "join":
                guard case .array(let items)? = arguments.first else { throw failure("join() takes a list") }
                return .string(items.map(\.description).joined(separator: text))
            default: break
            }
        case .object(let pairs):
            switch name {
            case "items": return .array(pairs.map { .array([.string($0.0), $0.1]) })
            case "keys": return .array(pairs.map { .string($0.0) })
            case "values": return .array(pairs.map { $0.1 })
            case "get":
                guard let key = stringArgument(0) else { throw failure("get() takes a string key") }
                let value = receiver.member(key)
                return value == .undefined ? (arguments.count > 1 ? arguments[1] : .none) : value
            default: break
            }
        default: break
        }
        throw failure("\(receiver.pythonRepr) has no method \(name)")
    }

    func applyFilter(_ name: String, _ value: TemplateValue, _ arguments: [TemplateValue], _ keywords: [(String, TemplateValue)]) throws -> TemplateValue {
        switch name {
        case "trim":
            return .string(value.description.trimmingCharacters(in: .whitespacesAndNewlines))
        case "length", "count":
            switch value {
            case .string(let text): return .int(text.count)
            case .array(let items): return .int(items.count)
            case .object(let pairs): return .int(pairs.count)
            case .undefined: return .int(0)
            default: throw failure("\(value.pythonRepr) has no length")
            }
        case "tojson":
            var indent: Int? = nil
            if case .int(let number)? = keywords.first(where: { $0.0 == "indent" })?.1 ?? arguments.first { indent = number }
            return .string(value.json(indent: indent))
        case "upper": return .string(value.description.uppercased())
        case "lower": return .string(value.description.lowercased())
        case "title": return .string(value.description.capitalized)
        case "capitalize":
            let text = value.description
            return .string(text.prefix(1).uppercased() + text.dropFirst().lowercased())
        case "default", "d":
            let useForFalsy = arguments.count > 1 && arguments[1].isTruthy
            if value == .undefined || (useForFalsy && !value.isTruthy) { return arguments.first ?? .string("") }
            return value
        case "first":
            if case .array(let items) = value { return items.first ?? .undefined }
            if case .string(let text) = value { return text.first.map { .string(String($0)) } ?? .undefined }
        case "last":
            if case .array(let items) = value { return items.last ?? .undefined }
            if case .string(let text) = value { return text.last.map { .string(String($0)) } ?? .undefined }
        case "join":
            var separator = ""
            if case .string(let text)? = arguments.first { separator = text }
            return .string(try iterate(value).map(\.description).joined(separator: separator))
        case "string", "safe", "e", "escape": return name == "string" || name == "safe" ? .string(value.description) : value
        case "int":
            switch value {
            case .int: return value
            case .double(let number): return .int(Int(number))
            case .string(let text): return .int(Int(text.trimmingCharacters(in: .whitespaces)) ?? 0)
            case .bool(let flag): return .int(flag ? 1 : 0)
            default: return .int(0)
            }
        case "float":
            if let number = TemplateRenderer.number(value) { return .double(number) }
            if case .string(let text) = value { return .double(Double(text) ?? 0) }
            return .double(0)
        case "list": return .array(try iterate(value))
        case "reverse":
            if case .string(let text) = value { return .string(String(text.reversed())) }
            return .array(try iterate(value).reversed())
        case "items":
            if case .object(let pairs) = value { return .array(pairs.map { .array([.string($0.0), $0.1]) }) }
        case "replace":
            guard arguments.count >= 2, case .string(let old) = arguments[0], case .string(let new) = arguments[1] else {
                throw failure("replace takes two strings")
            }
            return .string(value.description.replacingOccurrences(of: old, with: new))
        case "selectattr", "rejectattr":
            guard case .string(let attribute)? = arguments.first else { throw failure("\(name) needs an attribute name") }
            let kept = try iterate(value).filter { item in
                let member = item.member(attribute)
                let passes: Bool
                if arguments.count > 1, case .string(let test) = arguments[1] {
                    passes = try applyTest(test, member, Array(arguments.dropFirst(2)))
                } else {
                    passes = member.isTruthy
                }
                return passes == (name == "selectattr")
            }
            return .array(kept)
        case "map":
            if case .string(let attribute)? = keywords.first(where: { $0.0 == "attribute" })?.1 {
                return .array(try iterate(value).map { $0.member(attribute) })
            }
            if case .string(let filter)? = arguments.first {
                return .array(try iterate(value).map { try applyFilter(filter, $0, Array(arguments.dropFirst()), []) })
            }
            throw failure("map needs attribute= or a filter name")
        default:
            throw failure("unknown filter \(name)")
        }
        throw failure("filter \(name) does not apply to \(value.pythonRepr)")
    }

    func applyTest(_ name: String, _ value: TemplateValue, _ arguments: [TemplateValue]) throws -> Bool {
        switch name {
        case "defined": return value != .undefined
        case "undefined": return value == .undefined
        case "none": return value == .none
        case "string": if case .string = value { return true }; return false
        case "number": if case .int = value { return true }; if case .double = value { return true }; return false
        case "integer": if case .int = value { return true }; return false
        case "float": if case .double = value { return true }; return false
        case "boolean": if case .bool = value { return true }; return false
        case "true": return value == .bool(true)
        case "false": return value == .bool(false)
        case "mapping": if case .object = value { return true }; return false
        case "iterable", "sequence":
            switch value {
            case .array, .string: return true
            case .object: return true
            default: return false
            }
        case "even", "odd":
            guard case .int(let number) = value else { throw failure("\(name) needs an integer") }
            return (number % 2 == 0) == (name == "even")
        case "divisibleby":
            guard case .int(let number) = value, case .int(let divisor)? = arguments.first, divisor != 0 else {
                throw failure("divisibleby needs integers")
            }
            return number % divisor == 0
        case "eq", "equalto", "==": return value == (arguments.first ?? .undefined)
        case "ne", "!=": return value != (arguments.first ?? .undefined)
        case "in": return try binary("in", value, arguments.first ?? .undefined) == .bool(true)
        default: throw failure("unknown test \(name)")
        }
    }
}

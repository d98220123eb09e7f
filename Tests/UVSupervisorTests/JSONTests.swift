import Testing
@testable import UVSupervisor

/// The control protocol's JSON reader and writer (the library has no Foundation).
@Suite("JSON for the control protocol")
struct JSONTests {
    @Test("values round-trip: escapes, unicode, surrogate pairs, numbers, nesting, member order")
    func roundTrip() throws {
        let text = #"{"s":"a\"b\\c\/d\n\t\u0001é\ud83d\ude00","i":-42,"d":1.5e3,"z":0,"t":true,"f":false,"n":null,"a":[1,[2,{}],[]],"o":{"b":1,"a":2}}"#
        let value = try JSONValue.parse(text)
        #expect(value["s"]?.stringValue == "a\"b\\c/d\n\t\u{1}é😀")
        #expect(value["i"] == .integer(-42))
        #expect(value["d"] == .double(1500))
        #expect(value["d"]?.integerValue == 1500)
        #expect(value["o"].map { if case .object(let members) = $0 { return members.map(\.key) } else { return [] } } == ["b", "a"])
        let again = try JSONValue.parse(value.serialized)
        #expect(again == value)
        #expect(JSONValue.string("\u{0}\u{1f}\u{7f}\"").serialized == #""\u0000\u001f\u007f\"""#)
    }

    @Test("malformed input is refused with the byte offset, never a crash", arguments: [
        "", "{", "}", "[1,]", "{\"a\":1,}", "{'a':1}", "[1 2]", "01", "-", "1.", "1e", "+1", "tru", "nul",
        "\"abc", "\"a\nb\"", "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "{} {}",
        "[" + String(repeating: "[", count: 100) + "]", "1e999999", "{\"a\" 1}", "[\u{1}]",
    ])
    func malformed(_ text: String) {
        #expect(throws: JSONError.self) { try JSONValue.parse(text) }
    }

    @Test("nesting up to the limit parses; one deeper is refused")
    func depth() throws {
        let limit = JSONValue.maximumDepth
        let ok = String(repeating: "[", count: limit) + String(repeating: "]", count: limit)
        #expect(throws: Never.self) { try JSONValue.parse(ok) }
        let deep = String(repeating: "[", count: limit + 1) + String(repeating: "]", count: limit + 1)
        let error = #expect(throws: JSONError.self) { try JSONValue.parse(deep) }
        #expect(error?.description.contains("nested deeper") == true)
    }
}

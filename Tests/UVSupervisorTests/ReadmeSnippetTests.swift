import Testing
import TestSupport

/// The README's Swift examples are compiled with the package (`Examples/ReadmeSnippets`, the
/// daemon as `Examples/example-daemon`); this
/// keeps the two copies identical, so an example edited in one place cannot drift.
@Suite("README examples")
struct ReadmeSnippetTests {
    @Test("every swift block of the README appears verbatim in a compiled example (ReadmeSnippets or example-daemon)")
    func blocksMatchCompiledSnippets() async throws {
        let root = String(#filePath.split(separator: "/Tests/").first!)
        // Exclusive: opening a file must not be counted by another test's descriptor check.
        let (readmeText, snippetsText, daemonText) = await ExclusiveResources.run {
            (readSmallFile(root + "/README.md", limit: 1 << 20),
             readSmallFile(root + "/Examples/ReadmeSnippets/Snippets.swift"),
             readSmallFile(root + "/Examples/example-daemon/main.swift"))
        }
        let readme = try #require(readmeText)
        let snippets = try #require(snippetsText) + (try #require(daemonText))
        var blocks: [String] = []
        var current: [Substring]?
        for line in readme.split(separator: "\n", omittingEmptySubsequences: false) {
            if current == nil, line == "```swift" {
                current = []
            } else if current != nil, line == "```" {
                blocks.append(current!.joined(separator: "\n"))
                current = nil
            } else if current != nil {
                current!.append(line)
            }
        }
        #expect(blocks.count >= 5, "the README has its examples")
        for block in blocks {
            #expect(snippets.contains(block), "README block in no compiled example:\n\(block)")
        }
    }
}

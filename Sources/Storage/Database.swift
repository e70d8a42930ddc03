public import FluentKit
